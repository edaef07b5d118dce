//! The live settings: one table that names each setting a running daemon
//! can change, with its aliases, type, allowed range, a doc line, and how
//! to read and write it.
//!
//! Everything that takes a setting by name reads this table: the TOML file
//! ([`crate::config::Config`]), the JSON-RPC methods (`lull_set_options`,
//! `lull_get_options`, `lull_supervisor_*_config`, `bdev_nvme_*_options`)
//! and the command line (`lull target`'s flags, `lull set`, `lull get`).
//! A setting added here is therefore accepted, checked, shown and saved
//! everywhere at once, under the same name and with the same range.
//!
//! A value goes through three steps: [`Setting::read`] takes it from TOML
//! or JSON and checks its type (serde's "invalid type" errors, which the
//! TOML reader places on a line); [`Setting::check`] checks it against the
//! range ("`name = value: allowed`"); [`Setting::set`] writes it into a
//! [`Live`] snapshot. Rules that tie two settings together (a reconnect
//! delay not above the loss timeout, the adaptive low mark below the high
//! one) stay with the types they protect (`NvmeOptions::validate`,
//! `SupervisorConfig::validate`) and run on the whole snapshot afterwards.
//!
//! Settings read only at start (`cores`, `listen`, ...) are not here: see
//! [`crate::restart_only`].

use std::fmt;
use std::time::Duration;

use lull_engine::bdev::raid1::Raid1Options;
use lull_engine::initiator::NvmeOptions;
use lull_reactor::supervisor::{Policy, SupervisorConfig};
use serde::de::{DeserializeSeed, Deserializer};
use serde_json::Value as Json;

/// The values of every live setting at one moment: what a change is
/// checked against and written into before the daemon applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    /// The supervisor's policy and thresholds.
    pub supervisor: SupervisorConfig,
    /// Every reactor's hybrid spin window.
    pub idle_poll: Duration,
    /// The initiator's options for controllers attached from now on (the
    /// poll periods also apply to those attached).
    pub nvme: NvmeOptions,
    /// The raid volumes' rebuild settings (SPDK's `bdev_raid_set_options`),
    /// the same for every volume.
    pub raid: Raid1Options,
}

impl Default for Live {
    /// What `lull target` starts with when nothing is given: every reactor
    /// in interrupt mode, a 200 us spin window, the initiator's defaults.
    fn default() -> Self {
        Live {
            supervisor: SupervisorConfig::with_policy(Policy::Interrupt),
            idle_poll: Duration::from_micros(200),
            nvme: NvmeOptions::default(),
            raid: Raid1Options::default(),
        }
    }
}

/// Which part of the daemon a setting changes, and so which methods show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The supervisor's policy and thresholds (`lull_supervisor_get_config`).
    Supervisor,
    /// A setting every reactor holds itself (the spin window).
    Reactors,
    /// The NVMe/TCP initiator's options (`bdev_nvme_get_options`).
    Initiator,
    /// Another way to write a supervisor setting (Longhorn's boolean for
    /// the policy); shown by `lull_get_options` only.
    Shorthand,
    /// The raid volumes' rebuild (`bdev_raid_set_options`).
    Raid,
}

/// Where an alias comes from, and so where it is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Longhorn's name: accepted in the TOML file, by `lull_set_options`
    /// and on the command line.
    Longhorn,
    /// SPDK's name for the same option (`bdev_nvme_set_options`): accepted
    /// everywhere, and the one SPDK's methods take and show.
    Spdk,
    /// A short flag of `lull target` only (`--mode`).
    Flag,
}

/// A second name of a setting.
#[derive(Clone, Copy, Debug)]
pub struct Alias {
    /// The name.
    pub name: &'static str,
    /// Where it comes from.
    pub origin: Origin,
}

/// A setting's value, of its kind's type; not yet checked against the range.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingValue {
    /// An integer (wide enough for every integer setting, signed or not).
    Int(i128),
    /// A number with a fraction.
    Fraction(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A word, one of a list.
    Word(String),
}

impl SettingValue {
    /// As JSON (what `lull_get_options` shows).
    pub fn to_json(&self) -> Json {
        match self {
            SettingValue::Int(i) => match (u64::try_from(*i), i64::try_from(*i)) {
                (Ok(u), _) => Json::from(u),
                (_, Ok(s)) => Json::from(s),
                // No setting's range reaches beyond 64 bits.
                _ => Json::Null,
            },
            SettingValue::Fraction(f) => Json::from(*f),
            SettingValue::Bool(b) => Json::Bool(*b),
            SettingValue::Word(w) => Json::String(w.clone()),
        }
    }
}

impl fmt::Display for SettingValue {
    /// As it would be written in the TOML file: words quoted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingValue::Int(i) => write!(f, "{i}"),
            SettingValue::Fraction(x) => write!(f, "{x}"),
            SettingValue::Bool(b) => write!(f, "{b}"),
            SettingValue::Word(w) => write!(f, "\"{w}\""),
        }
    }
}

/// A value outside a setting's range: the name it was given under, the
/// value, and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    /// The name, as given (a setting's name or one of its aliases).
    pub name: String,
    /// The value, as written in the TOML file.
    pub value: String,
    /// What is allowed ([`Setting::allowed`]).
    pub allowed: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.name, self.value, self.allowed)
    }
}

impl std::error::Error for SettingError {}

/// A setting's type and range, with how to read it from and write it into
/// a [`Live`] snapshot. The accessors only see values within the range.
#[derive(Clone, Copy)]
pub enum Kind {
    /// An integer from `min` to `max` (inclusive), or `also` when given.
    Int {
        /// Smallest value.
        min: i128,
        /// Largest value.
        max: i128,
        /// One more value outside the range, and what it means (0, "no keep-alive").
        also: Option<(i128, &'static str)>,
        /// Its unit ("us", "ms", "s", "entries").
        unit: &'static str,
        /// Appended to the range as written ("` (0 = every loop)`").
        note: &'static str,
        /// Its value in a snapshot.
        get: fn(&Live) -> i128,
        /// Writes a value the range allows.
        set: fn(&mut Live, i128),
    },
    /// A number above `min` and below `max` (or at most `max` when `max_included`).
    Fraction {
        /// The value must be above this.
        min: f64,
        /// The value must be below this, or at most this.
        max: f64,
        /// `max` itself is allowed.
        max_included: bool,
        /// Appended to the range as written ("`, and below adaptive_high_mark`").
        note: &'static str,
        /// Its value in a snapshot.
        get: fn(&Live) -> f64,
        /// Writes a value the range allows.
        set: fn(&mut Live, f64),
    },
    /// `true` or `false`.
    Bool {
        /// Its value in a snapshot.
        get: fn(&Live) -> bool,
        /// Writes it.
        set: fn(&mut Live, bool),
    },
    /// One of `words`.
    Word {
        /// The words allowed, in the order error messages list them.
        words: &'static [&'static str],
        /// Its value in a snapshot (one of `words`).
        get: fn(&Live) -> &'static str,
        /// Writes one of `words`.
        set: fn(&mut Live, &str),
    },
}

/// One live setting.
pub struct Setting {
    /// Its name: SPDK's option name where SPDK has the option, lull's own
    /// otherwise (in SPDK's style).
    pub name: &'static str,
    /// Other names it is known by.
    pub aliases: &'static [Alias],
    /// One line saying what it does.
    pub doc: &'static str,
    /// What it changes.
    pub part: Part,
    /// Its type, range and accessors.
    pub kind: Kind,
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setting")
            .field("name", &self.name)
            .field("allowed", &self.allowed())
            .finish()
    }
}

impl Setting {
    /// What is allowed, as error messages and `--help` say it
    /// ("0 to 1000000 us", "one of poll, interrupt, ...").
    pub fn allowed(&self) -> String {
        match self.kind {
            Kind::Int {
                min,
                max,
                also,
                unit,
                note,
                ..
            } => {
                let also = also.map_or(String::new(), |(v, what)| format!("{v} ({what}) or "));
                let unit = if unit.is_empty() {
                    String::new()
                } else {
                    format!(" {unit}")
                };
                format!("{also}{min} to {max}{unit}{note}")
            }
            Kind::Fraction {
                min,
                max,
                max_included,
                note,
                ..
            } => {
                let top = if max_included { "at most" } else { "below" };
                format!("above {min} and {top} {max}{note}")
            }
            Kind::Bool { .. } => "true or false".to_string(),
            Kind::Word { words, .. } => format!("one of {}", words.join(", ")),
        }
    }

    /// The words a [`Kind::Word`] setting takes (none for other kinds).
    pub fn words(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Word { words, .. } => words,
            _ => &[],
        }
    }

    /// Its name and every alias of these origins.
    pub fn names<'a>(&'a self, origins: &'a [Origin]) -> impl Iterator<Item = &'static str> + 'a {
        std::iter::once(self.name).chain(
            self.aliases
                .iter()
                .filter(move |a| origins.contains(&a.origin))
                .map(|a| a.name),
        )
    }

    /// The name SPDK's methods use for it: its SPDK alias, else its name.
    pub fn spdk_name(&self) -> &'static str {
        self.aliases
            .iter()
            .find(|a| a.origin == Origin::Spdk)
            .map_or(self.name, |a| a.name)
    }

    /// Reads a value of this setting's type from `d` (TOML or JSON).
    ///
    /// # Errors
    /// `d`'s "invalid type" error naming what is expected; the range is not
    /// checked here ([`check`](Self::check)).
    pub fn read<'de, D: Deserializer<'de>>(&'static self, d: D) -> Result<SettingValue, D::Error> {
        read::Reader(self).deserialize(d)
    }

    /// Reads a value from JSON, given under `given` (the setting's name or an alias).
    ///
    /// # Errors
    /// A message naming `given`, the value and what is expected.
    pub fn from_json(&'static self, given: &str, v: &Json) -> Result<SettingValue, String> {
        self.read(v).map_err(|e| format!("{given}: {e}"))
    }

    /// Reads a value typed on the command line: a number or `true`/`false`
    /// as JSON, anything else as a word.
    ///
    /// # Errors
    /// As [`from_json`](Self::from_json).
    pub fn from_text(&'static self, given: &str, text: &str) -> Result<SettingValue, String> {
        let v: Json = serde_json::from_str(text.trim()).unwrap_or_else(|_| Json::String(text.to_string()));
        self.from_json(given, &v)
    }

    /// Checks `v` against the range; `given` is the name it came under.
    ///
    /// # Errors
    /// A [`SettingError`] naming `given`, `v` and [`allowed`](Self::allowed).
    pub fn check(&self, given: &str, v: &SettingValue) -> Result<(), SettingError> {
        let ok = match (self.kind, v) {
            (Kind::Int { min, max, also, .. }, SettingValue::Int(i)) => {
                (min..=max).contains(i) || also.is_some_and(|(a, _)| a == *i)
            }
            (
                Kind::Fraction {
                    min, max, max_included, ..
                },
                SettingValue::Fraction(x),
            ) => *x > min && (*x < max || (max_included && *x == max)),
            (Kind::Bool { .. }, SettingValue::Bool(_)) => true,
            (Kind::Word { words, .. }, SettingValue::Word(w)) => words.contains(&w.as_str()),
            // A value of another kind: [`read`] never makes one.
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(SettingError {
                name: given.to_string(),
                value: v.to_string(),
                allowed: self.allowed(),
            })
        }
    }

    /// Checks `v` and writes it into `live`.
    ///
    /// # Errors
    /// As [`check`](Self::check); `live` is unchanged then.
    pub fn set(&self, live: &mut Live, given: &str, v: &SettingValue) -> Result<(), SettingError> {
        self.check(given, v)?;
        match (self.kind, v) {
            (Kind::Int { set, .. }, SettingValue::Int(i)) => set(live, *i),
            (Kind::Fraction { set, .. }, SettingValue::Fraction(x)) => set(live, *x),
            (Kind::Bool { set, .. }, SettingValue::Bool(b)) => set(live, *b),
            (Kind::Word { set, .. }, SettingValue::Word(w)) => set(live, w),
            // `check` refused every other pairing.
            _ => {}
        }
        Ok(())
    }

    /// A value other than its default that its range and the rules
    /// between settings allow when every other setting is at its default:
    /// an example for tests of every setting (its default when there is
    /// none, which the table's own tests refuse).
    pub fn example(&self) -> SettingValue {
        let default = self.get(&Live::default());
        let candidates: Vec<SettingValue> = match self.kind {
            Kind::Int { min, max, also, .. } => {
                let d = match default {
                    SettingValue::Int(d) => d,
                    _ => min,
                };
                also.map(|(a, _)| a)
                    .into_iter()
                    .chain([min, max, min + (max - min) / 2, min + 1, d + 1, d - 1])
                    .map(SettingValue::Int)
                    .collect()
            }
            Kind::Fraction { min, max, .. } => [2.0, 4.0, 8.0]
                .iter()
                .map(|k| SettingValue::Fraction(min + (max - min) / k))
                .collect(),
            Kind::Bool { .. } => vec![SettingValue::Bool(true), SettingValue::Bool(false)],
            Kind::Word { words, .. } => words.iter().map(|w| SettingValue::Word((*w).to_string())).collect(),
        };
        candidates
            .into_iter()
            .find(|v| {
                let mut l = Live::default();
                *v != default
                    && self.set(&mut l, self.name, v).is_ok()
                    && l.supervisor.validate().is_ok()
                    && l.nvme.validate().is_ok()
                    && l.raid.check().is_ok()
            })
            .unwrap_or(default)
    }

    /// Its value in `live`.
    pub fn get(&self, live: &Live) -> SettingValue {
        match self.kind {
            Kind::Int { get, .. } => SettingValue::Int(get(live)),
            Kind::Fraction { get, .. } => SettingValue::Fraction(get(live)),
            Kind::Bool { get, .. } => SettingValue::Bool(get(live)),
            Kind::Word { get, .. } => SettingValue::Word(get(live).to_string()),
        }
    }
}

/// The setting called `name` (exactly, or by an alias of these origins).
pub fn find(name: &str, origins: &[Origin]) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.names(origins).any(|n| n == name))
}

/// Every origin but [`Origin::Flag`]: the names the TOML file, `lull_set_options`,
/// `lull set` and `lull get` take.
pub const EVERY_NAME: &[Origin] = &[Origin::Longhorn, Origin::Spdk];

/// The setting called `name` on the command line, where `-` and `_` are
/// one character (`lull set idle-poll-us 50`), with the spelling it matched.
pub fn find_loose(name: &str) -> Option<(&'static Setting, &'static str)> {
    let key = name.replace('-', "_");
    SETTINGS
        .iter()
        .find_map(|s| s.names(EVERY_NAME).find(|n| n.replace('-', "_") == key).map(|n| (s, n)))
}

/// The names of every setting, in table order, for messages ("a, b, c").
pub fn name_list() -> String {
    SETTINGS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// The names one method (or file) takes, each with its setting.
#[derive(Clone, Debug)]
pub struct Names(Vec<(&'static str, &'static Setting)>);

impl Names {
    /// The settings `accept` picks, by their names and their aliases of `origins`.
    pub fn of(accept: impl Fn(&Setting) -> bool, origins: &[Origin]) -> Names {
        Names(
            SETTINGS
                .iter()
                .filter(|s| accept(s))
                .flat_map(|s| s.names(origins).map(move |n| (n, s)))
                .collect(),
        )
    }

    /// The settings `accept` picks, by the names SPDK's methods use ([`Setting::spdk_name`]).
    pub fn spdk(accept: impl Fn(&Setting) -> bool) -> Names {
        Names(
            SETTINGS
                .iter()
                .filter(|s| accept(s))
                .map(|s| (s.spdk_name(), s))
                .collect(),
        )
    }

    /// The setting called `name` here.
    pub fn find(&self, name: &str) -> Option<&'static Setting> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// The names, quoted, for an "expected one of" message.
    pub fn list(&self) -> String {
        self.0
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Settings given by name, each checked against its range; applied in
/// table order.
#[derive(Clone, Debug, Default)]
pub struct Changes(Vec<(&'static Setting, String, SettingValue)>);

impl Changes {
    /// Adds `v` for `s`, given under `given`, after checking it against the
    /// range; it replaces a value added before for the same setting.
    ///
    /// # Errors
    /// The value is out of range; nothing is added then.
    pub fn add(&mut self, s: &'static Setting, given: &str, v: SettingValue) -> Result<(), SettingError> {
        s.check(given, &v)?;
        self.0.retain(|(x, _, _)| !std::ptr::eq(*x, s));
        self.0.push((s, given.to_string(), v));
        self.0
            .sort_by_key(|(s, _, _)| SETTINGS.iter().position(|x| std::ptr::eq(x, *s)));
        Ok(())
    }

    /// Whether a setting of `part` is among them.
    pub fn touches(&self, part: Part) -> bool {
        self.0.iter().any(|(s, _, _)| s.part == part)
    }

    /// Whether none is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes them into `live`, in table order.
    ///
    /// # Errors
    /// The first out of range (none is, once added).
    pub fn apply(&self, live: &mut Live) -> Result<(), SettingError> {
        for (s, given, v) in &self.0 {
            s.set(live, given, v)?;
        }
        Ok(())
    }

    /// The settings given, with their values, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Setting, &SettingValue)> {
        self.0.iter().map(|(s, _, v)| (*s, v))
    }
}

/// Reads the settings of a JSON object whose keys are `names`: each value
/// read ([`Setting::from_json`]) and checked against its range; a `null`
/// value counts as not given (as SPDK's optional parameters do).
///
/// # Errors
/// A message naming the key: not one of `names` ("unknown field `x`,
/// expected one of ..."), a setting given under two of its names, a value
/// of the wrong type or out of range.
pub fn changes_from_json(params: &serde_json::Map<String, Json>, names: &Names) -> Result<Changes, String> {
    let mut out = Changes::default();
    for (k, v) in params {
        let Some(s) = names.find(k) else {
            return Err(format!("unknown field `{k}`, expected one of {}", names.list()));
        };
        if v.is_null() {
            continue;
        }
        if out.iter().any(|(x, _)| std::ptr::eq(x, s)) {
            return Err(format!("duplicate field `{}`", s.name));
        }
        let value = s.from_json(k, v)?;
        out.add(s, k, value).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

mod read;
mod table;

pub use table::SETTINGS;

#[cfg(test)]
mod tests;
