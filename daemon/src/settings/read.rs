//! Reading a setting's value from TOML or JSON by its kind: serde's
//! "invalid type" error names what was expected, and the reader (TOML's)
//! places it on its line. The range is checked afterwards
//! ([`Setting::check`]).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

use super::{Kind, Setting, SettingValue};

/// [`Setting::read`]'s serde seed: the kind decides which values are accepted.
pub(super) struct Reader(pub(super) &'static Setting);

impl<'de> DeserializeSeed<'de> for Reader {
    type Value = SettingValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SettingValue, D::Error> {
        match self.0.kind {
            Kind::Int { .. } => d.deserialize_any(IntVisitor),
            Kind::Fraction { .. } => d.deserialize_any(FractionVisitor),
            Kind::Bool { .. } => d.deserialize_any(BoolVisitor),
            Kind::Word { .. } => d.deserialize_any(WordVisitor),
        }
    }
}

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = SettingValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<SettingValue, E> {
        Ok(SettingValue::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SettingValue, E> {
        Ok(SettingValue::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<SettingValue, E> {
        Ok(SettingValue::Int(v))
    }
}

struct FractionVisitor;

impl Visitor<'_> for FractionVisitor {
    type Value = SettingValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<SettingValue, E> {
        Ok(SettingValue::Fraction(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<SettingValue, E> {
        Ok(SettingValue::Fraction(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SettingValue, E> {
        Ok(SettingValue::Fraction(v as f64))
    }
}

struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = SettingValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true or false")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<SettingValue, E> {
        Ok(SettingValue::Bool(v))
    }
}

struct WordVisitor;

impl Visitor<'_> for WordVisitor {
    type Value = SettingValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<SettingValue, E> {
        Ok(SettingValue::Word(v.to_string()))
    }
}
