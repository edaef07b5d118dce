//! Core lists: which CPUs get a reactor (`0-3,6`, `2,5`), as in `taskset -c`,
//! SPDK's `--cpumask [0-3,6]` list form, and `/sys/devices/system/cpu/online`.
//!
//! Parsing is pure; [`CoreList::validate_online`] checks the result against the
//! CPUs this machine has online and this process may run on.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Highest CPU number accepted (the kernel's `CPU_SETSIZE` is 1024).
pub const MAX_CORE: usize = 1023;

/// An ordered, duplicate-free list of CPU numbers; one reactor per entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreList {
    cores: Vec<usize>,
}

/// Why a core list was refused. Each variant names the offending element.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CoreListError {
    /// The list has no element at all.
    #[error("core list is empty; expected CPU numbers or ranges such as `0-3,6`")]
    Empty,
    /// An element is neither `N` nor `N-M`.
    #[error("core list element `{element}` is not a CPU number or a range `N-M`")]
    BadElement {
        /// The element as written.
        element: String,
    },
    /// A range runs backwards (`5-3`).
    #[error("core list range `{element}` runs backwards: its start {start} is above its end {end}")]
    Reversed {
        /// The element as written.
        element: String,
        /// First CPU of the range.
        start: usize,
        /// Last CPU of the range.
        end: usize,
    },
    /// A CPU number exceeds [`MAX_CORE`].
    #[error("core list element `{element}` names CPU {core}, above the highest supported CPU {max}", max = MAX_CORE)]
    TooHigh {
        /// The element as written.
        element: String,
        /// The CPU number.
        core: usize,
    },
    /// A CPU appears twice (`1,0-2`).
    #[error("core list element `{element}` repeats CPU {core}")]
    Duplicate {
        /// The element as written.
        element: String,
        /// The repeated CPU.
        core: usize,
    },
    /// A CPU is not online, or this process may not run on it.
    #[error("core list element `{element}` names CPU {core}, which is not available here (usable CPUs: {usable})")]
    Unavailable {
        /// The element as written.
        element: String,
        /// The CPU number.
        core: usize,
        /// The usable CPUs, in core-list form.
        usable: String,
    },
    /// The online-CPU list of this machine could not be read.
    #[error("cannot read the online CPUs: {0}")]
    System(String),
}

impl CoreList {
    /// Parses a list such as `0-3,6` or `2,5`. Whitespace around elements is
    /// ignored. Order is kept: the first core listed hosts the first reactor.
    ///
    /// # Errors
    /// [`CoreListError`] naming the first bad element.
    pub fn parse(text: &str) -> Result<Self, CoreListError> {
        let mut cores: Vec<usize> = Vec::new();
        if text.trim().is_empty() {
            return Err(CoreListError::Empty);
        }
        for raw in text.split(',') {
            let element = raw.trim();
            let bad = || CoreListError::BadElement {
                element: element.to_string(),
            };
            let (start, end) = match element.split_once('-') {
                Some((a, b)) => (parse_cpu(a).ok_or_else(bad)?, parse_cpu(b).ok_or_else(bad)?),
                None => {
                    let n = parse_cpu(element).ok_or_else(bad)?;
                    (n, n)
                }
            };
            if start > end {
                return Err(CoreListError::Reversed {
                    element: element.to_string(),
                    start,
                    end,
                });
            }
            if end > MAX_CORE {
                return Err(CoreListError::TooHigh {
                    element: element.to_string(),
                    core: end,
                });
            }
            for core in start..=end {
                if cores.contains(&core) {
                    return Err(CoreListError::Duplicate {
                        element: element.to_string(),
                        core,
                    });
                }
                cores.push(core);
            }
        }
        Ok(Self { cores })
    }

    /// Every CPU that is online and in the calling thread's affinity mask
    /// (which the threads it starts inherit).
    ///
    /// # Errors
    /// [`CoreListError::System`] when `/sys/devices/system/cpu/online` or the
    /// affinity mask cannot be read.
    pub fn usable() -> Result<Self, CoreListError> {
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map_err(|e| CoreListError::System(format!("/sys/devices/system/cpu/online: {e}")))?;
        let online = CoreList::parse(online.trim())?;
        let allowed =
            crate::sys::allowed_cpus().map_err(|e| CoreListError::System(format!("sched_getaffinity: {e}")))?;
        Ok(Self {
            cores: online.cores.into_iter().filter(|c| allowed.contains(c)).collect(),
        })
    }

    /// Checks every core against [`CoreList::usable`].
    ///
    /// # Errors
    /// [`CoreListError::Unavailable`] for the first core that cannot be used.
    pub fn validate_online(&self) -> Result<(), CoreListError> {
        self.validate_against(&Self::usable()?)
    }

    /// Checks every core against an explicit set of usable CPUs.
    ///
    /// # Errors
    /// [`CoreListError::Unavailable`] for the first core not in `usable`.
    pub fn validate_against(&self, usable: &CoreList) -> Result<(), CoreListError> {
        match self.cores.iter().find(|c| !usable.cores.contains(c)) {
            None => Ok(()),
            Some(&core) => Err(CoreListError::Unavailable {
                element: core.to_string(),
                core,
                usable: usable.to_string(),
            }),
        }
    }

    /// The CPUs, in the order given.
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// Number of CPUs (reactors).
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// Always false for a parsed list; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }
}

fn parse_cpu(s: &str) -> Option<usize> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for CoreList {
    type Err = CoreListError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<Vec<usize>> for CoreList {
    type Error = CoreListError;
    fn try_from(v: Vec<usize>) -> Result<Self, Self::Error> {
        let text = v.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        Self::parse(&text)
    }
}

/// Formats in the shortest core-list form: consecutive CPUs in order become a
/// range (`0-3,6`).
impl fmt::Display for CoreList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.cores.len() {
            let start = self.cores[i];
            let mut j = i;
            while j + 1 < self.cores.len() && self.cores[j + 1] == self.cores[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if j == i {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{}", self.cores[j])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(s: &str) -> Vec<usize> {
        CoreList::parse(s).expect(s).cores().to_vec()
    }

    #[test]
    fn good_lists() {
        assert_eq!(cores("0-3,6"), vec![0, 1, 2, 3, 6]);
        assert_eq!(cores("2,5"), vec![2, 5]);
        assert_eq!(cores("7"), vec![7]);
        assert_eq!(cores(" 1 , 3-4 "), vec![1, 3, 4]);
        assert_eq!(cores("5,0"), vec![5, 0], "order is kept");
        assert_eq!(cores("3-3"), vec![3]);
        assert_eq!(cores("1023"), vec![1023]);
    }

    #[test]
    fn bad_lists_name_the_element() {
        let err = |s: &str| CoreList::parse(s).unwrap_err().to_string();
        assert_eq!(
            err(""),
            "core list is empty; expected CPU numbers or ranges such as `0-3,6`"
        );
        assert_eq!(
            err("  "),
            "core list is empty; expected CPU numbers or ranges such as `0-3,6`"
        );
        assert_eq!(
            err("0-3,x"),
            "core list element `x` is not a CPU number or a range `N-M`"
        );
        assert_eq!(err("1,,2"), "core list element `` is not a CPU number or a range `N-M`");
        assert_eq!(err("-1"), "core list element `-1` is not a CPU number or a range `N-M`");
        assert_eq!(
            err("1-2-3"),
            "core list element `1-2-3` is not a CPU number or a range `N-M`"
        );
        assert_eq!(err("+2"), "core list element `+2` is not a CPU number or a range `N-M`");
        assert_eq!(
            err("0x1"),
            "core list element `0x1` is not a CPU number or a range `N-M`"
        );
        assert_eq!(
            err("2,5-3"),
            "core list range `5-3` runs backwards: its start 5 is above its end 3"
        );
        assert_eq!(
            err("1024"),
            "core list element `1024` names CPU 1024, above the highest supported CPU 1023"
        );
        assert_eq!(
            err("0-99999999999999999999"),
            "core list element `0-99999999999999999999` is not a CPU number or a range `N-M`"
        );
        assert_eq!(err("1,0-2"), "core list element `0-2` repeats CPU 1");
        assert_eq!(err("4,4"), "core list element `4` repeats CPU 4");
    }

    #[test]
    fn unavailable_core_is_named_with_the_usable_set() {
        let usable = CoreList::parse("0-1").unwrap();
        CoreList::parse("1,0").unwrap().validate_against(&usable).unwrap();
        let e = CoreList::parse("0,5").unwrap().validate_against(&usable).unwrap_err();
        assert_eq!(
            e.to_string(),
            "core list element `5` names CPU 5, which is not available here (usable CPUs: 0-1)"
        );
    }

    #[test]
    fn validates_against_this_machine() {
        let usable = CoreList::usable().unwrap();
        assert!(!usable.is_empty());
        usable.validate_online().unwrap();
        let e = CoreList::parse("1023").unwrap().validate_online();
        // A machine with 1024 CPUs would accept it; every other one must refuse it.
        if !usable.cores().contains(&1023) {
            assert!(matches!(e, Err(CoreListError::Unavailable { core: 1023, .. })));
        }
    }

    #[test]
    fn display_is_the_shortest_form_and_round_trips() {
        for (text, shown) in [
            ("0-3,6", "0-3,6"),
            ("0,1,2", "0-2"),
            ("2,5", "2,5"),
            ("5,0-1", "5,0-1"),
            ("3,2", "3,2"),
        ] {
            let list = CoreList::parse(text).unwrap();
            assert_eq!(list.to_string(), shown);
            assert_eq!(CoreList::parse(shown).unwrap(), list);
        }
    }
}
