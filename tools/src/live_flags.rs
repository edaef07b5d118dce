//! The live settings as command-line flags, made from the settings table
//! (`lull_daemon::settings`): one `--name` per setting (its aliases as
//! visible aliases), its help from the table's doc line, range and
//! default, and its value read and checked by the table. `lull target`
//! takes them all; `lull mode`, `lull set` and `lull get` check names and
//! values through the same table.

use std::collections::BTreeMap;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use lull_daemon::settings::{self, Kind, Live, Part, SETTINGS, Setting, SettingValue};

/// The live settings given as flags, by their table names.
#[derive(Clone, Debug, Default)]
pub struct LiveFlags {
    /// Each setting given, by its name (an alias given is stored under the name).
    pub given: BTreeMap<&'static str, SettingValue>,
}

impl FromArgMatches for LiveFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut f = LiveFlags::default();
        f.update_from_arg_matches(m)?;
        Ok(f)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for s in SETTINGS {
            if let Some(v) = m.get_one::<SettingValue>(s.name) {
                self.given.insert(s.name, v.clone());
            }
        }
        Ok(())
    }
}

impl Args for LiveFlags {
    fn augment_args(cmd: Command) -> Command {
        SETTINGS.iter().fold(cmd, |c, s| c.arg(flag(s)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// `--name VALUE` for setting `s`.
fn flag(s: &'static Setting) -> Arg {
    let value_name = match s.kind {
        Kind::Bool { .. } => "BOOL".to_string(),
        _ => s.name.to_uppercase(),
    };
    let numeric = matches!(s.kind, Kind::Int { .. } | Kind::Fraction { .. });
    let aliases: Vec<String> = s.aliases.iter().map(|a| a.name.replace('_', "-")).collect();
    Arg::new(s.name)
        .long(s.name.replace('_', "-"))
        .visible_aliases(aliases)
        .value_name(value_name)
        .help(help(s))
        .allow_negative_numbers(numeric)
        .value_parser(parser(s))
}

/// A setting's help: its doc line, what is allowed and its default.
pub fn help(s: &Setting) -> String {
    let default = if s.part == Part::Shorthand {
        String::new()
    } else {
        format!(" [default: {}]", plain(&s.get(&Live::default())))
    };
    format!("{} Allowed: {}.{default}", s.doc, s.allowed())
}

/// A value as typed on the command line (a word unquoted).
fn plain(v: &SettingValue) -> String {
    match v {
        SettingValue::Word(w) => w.clone(),
        other => other.to_string(),
    }
}

/// Reads `text` as a value of `s`, checked against its range; errors
/// name the setting, the value and what is allowed.
pub fn parse(s: &'static Setting, given: &str, text: &str) -> Result<SettingValue, String> {
    let v = s.from_text(given, text)?;
    s.check(given, &v).map_err(|e| e.to_string())?;
    Ok(v)
}

/// clap's value parser for setting `s`.
fn parser(s: &'static Setting) -> impl Fn(&str) -> Result<SettingValue, String> + Clone + Send + Sync + 'static {
    move |text: &str| parse(s, s.name, text)
}

/// The setting called `name` in the table (a name the code itself uses).
///
/// # Errors
/// The table has no such setting.
pub fn setting(name: &str) -> Result<&'static Setting, String> {
    settings::find(name, &[]).ok_or_else(|| format!("no live setting `{name}`"))
}

/// clap's value parser for an integer flag that is setting `name` under
/// another command (`lull mode set --latency-budget-us`).
pub fn int_parser(name: &'static str) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text: &str| match parse(setting(name)?, name, text)? {
        SettingValue::Int(i) => u64::try_from(i).map_err(|_| format!("{name} = {i}: not a count")),
        other => Err(format!("{name} = {other}: not an integer")),
    }
}

/// The words of a word setting (`mode_policy`), for clap's possible values.
pub fn words(name: &str) -> &'static [&'static str] {
    setting(name).map_or(&[], |s| s.words())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        live: LiveFlags,
    }

    fn given(args: &[&str]) -> Result<BTreeMap<&'static str, SettingValue>, String> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|t| t.live.given)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_setting_is_a_flag_under_each_name_it_has() {
        for s in SETTINGS {
            let sample = s.get(&Live::default());
            for name in s.names(&[
                settings::Origin::Longhorn,
                settings::Origin::Spdk,
                settings::Origin::Flag,
            ]) {
                let flag = format!("--{}", name.replace('_', "-"));
                let g = given(&[&flag, &plain(&sample)]).unwrap_or_else(|e| panic!("{flag}: {e}"));
                assert_eq!(g.get(s.name), Some(&sample), "{flag}");
                assert_eq!(g.len(), 1, "{flag}");
            }
        }
    }

    #[test]
    fn a_flag_out_of_range_names_the_setting_and_the_range() {
        for (flag, value, want) in [
            ("--idle-poll-us", "1000001", "idle_poll_us = 1000001: 0 to 1000000 us"),
            ("--ctrlr-loss-timeout-sec", "-2", "ctrlr_loss_timeout_sec = -2: -1 to "),
            ("--io-queue-requests", "1", "io_queue_size = 1: 2 to 4096 entries"),
            (
                "--mode",
                "turbo",
                "mode_policy = \"turbo\": one of poll, interrupt, hybrid",
            ),
            (
                "--adaptive-low-mark",
                "1.5",
                "adaptive_low_mark = 1.5: above 0 and below 1",
            ),
            (
                "--keep-alive-timeout-ms",
                "5",
                "keep_alive_timeout_ms = 5: 0 (no keep-alive) or 1000 to 3600000 ms",
            ),
        ] {
            let e = given(&[flag, value]).unwrap_err();
            assert!(e.contains(want), "{flag} {value}: {e}");
        }
        let e = given(&["--interrupt-mode", "yes"]).unwrap_err();
        assert!(e.contains("interrupt_mode") && e.contains("true or false"), "{e}");
    }

    #[test]
    fn help_gives_the_range_and_the_default() {
        let s = setting("idle_poll_us").unwrap();
        assert!(
            help(s).ends_with("Allowed: 0 to 1000000 us. [default: 200]"),
            "{}",
            help(s)
        );
        let s = setting("mode_policy").unwrap();
        assert!(help(s).ends_with("[default: interrupt]"), "{}", help(s));
        assert_eq!(
            words("mode_policy"),
            ["poll", "interrupt", "hybrid", "adaptive", "budget"]
        );
        assert_eq!(int_parser("latency_budget_us")("100"), Ok(100));
        assert!(
            int_parser("latency_budget_us")("1000001")
                .unwrap_err()
                .contains("0 to 1000000 us")
        );
    }
}
