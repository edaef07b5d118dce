//! Duplicate keys in a JSON text, which a `serde_json::Value` silently
//! collapses (the last one wins). SPDK's JSON decoder refuses an object that
//! names a key twice, so a request that does is an error here too, naming
//! the key, rather than a request that quietly means something else.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// The path of the first key that an object of `text` (one JSON value)
/// names twice, as `a.b[2].c`; `None` when there is none or `text` is not
/// JSON (the caller has parsed it already and reports that itself).
pub fn first_duplicate_key(text: &[u8]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    match (Walk { path: String::new() }).deserialize(&mut de) {
        Err(e) => e.to_string().strip_prefix(DUPLICATE).map(|rest| {
            // serde_json appends " at line L column C".
            rest.rsplit_once(" at line ").map_or(rest, |(p, _)| p).to_string()
        }),
        Ok(()) => None,
    }
}

const DUPLICATE: &str = "duplicate key ";

/// Walks one JSON value, failing at the first key seen twice in an object.
struct Walk {
    /// Where the value lies in the document.
    path: String,
}

impl Walk {
    fn child(&self, key: &str) -> Walk {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Walk { path }
    }
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while seq
            .next_element_seed(Walk {
                path: format!("{}[{i}]", self.path),
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = self.child(&key);
            if !seen.insert(key) {
                return Err(A::Error::custom(format!("{DUPLICATE}{}", child.path)));
            }
            map.next_value_seed(child)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_key_named_twice_with_its_path() {
        assert_eq!(first_duplicate_key(br#"{"a":1,"b":{"c":2}}"#), None);
        assert_eq!(first_duplicate_key(br#"{"a":1,"a":2}"#).as_deref(), Some("a"));
        assert_eq!(
            first_duplicate_key(br#"{"method":"m","params":{"name":"x","size":1,"name":"y"}}"#).as_deref(),
            Some("params.name")
        );
        assert_eq!(
            first_duplicate_key(br#"[{"ok":1},{"p":{"l":[0,{"k":1,"k":1}]}}]"#).as_deref(),
            Some("[1].p.l[1].k")
        );
        // The same key in two different objects is no duplicate.
        assert_eq!(first_duplicate_key(br#"{"a":{"k":1},"b":{"k":2}}"#), None);
        // Escapes are compared decoded: "\u0061" is "a".
        assert_eq!(first_duplicate_key(br#"{"a":1,"\u0061":2}"#).as_deref(), Some("a"));
        // Not JSON: for the caller's parser to report.
        assert_eq!(first_duplicate_key(b"{\"a\":"), None);
        // Deep nesting stops at serde_json's recursion limit, as the parse does.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(first_duplicate_key(deep.as_bytes()), None);
    }
}
