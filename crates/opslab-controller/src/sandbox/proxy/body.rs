//! JSON request bodies read as the engine reads them. Pure.
//!
//! The engine decodes bodies with Go's encoding/json, which matches field names without regard to
//! case (and folds `ſ` to `s` and the Kelvin sign to `k`), and merges a repeated object field into
//! the first. A body the proxy would read differently from the engine could smuggle a setting past
//! the policy, so a body whose objects repeat a key (after that folding) is refused, and fields are
//! looked up the way Go matches them.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The largest body the proxy reads to judge it.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A request body the proxy refuses to judge.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body could not be read (limit {MAX_BODY_BYTES} bytes): {0}")]
    Unreadable(Box<dyn std::error::Error + Send + Sync>),
    #[error("the request body is not JSON the proxy accepts: {0}")]
    NotJson(serde_json::Error),
    #[error("the request body has data after its JSON value: {0}")]
    TrailingData(serde_json::Error),
}

/// Parses a JSON body; an error for invalid JSON, trailing data, or an object with a repeated key.
pub fn parse(bytes: &[u8]) -> Result<Value, BodyError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict
        .deserialize(&mut deserializer)
        .map_err(BodyError::NotJson)?;
    deserializer.end().map_err(BodyError::TrailingData)?;
    Ok(value)
}

/// A field of a JSON object, matched as Go matches struct fields. `name` is lower-case ASCII.
pub fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object
        .as_object()?
        .iter()
        .find(|(key, _)| fold(key) == name)
        .map(|(_, value)| value)
}

/// A string field, when it is one.
pub fn string<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    field(object, name).and_then(Value::as_str)
}

/// Whether a field holds something: not absent, null, false, 0, "" or an empty list or object.
pub fn is_set(object: &Value, name: &str) -> bool {
    match field(object, name) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(set)) => *set,
        Some(Value::Number(number)) => number.as_f64() != Some(0.0),
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
    }
}

/// The strings of a list field (other items skipped: the engine rejects them).
pub fn strings<'a>(object: &'a Value, name: &str) -> Vec<&'a str> {
    field(object, name)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A key as Go's encoding/json compares it with a field name.
fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Builds a `Value`, refusing objects with repeated (folded) keys.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = access.next_key::<String>()? {
            if !seen.insert(fold(&key)) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let value = access.next_value_seed(Strict)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_match_as_go_matches_them() {
        let body = parse(br#"{"PRIVILEGED": true, "hostConfig": {"Binds": ["/:/host"]}}"#).unwrap();
        assert!(is_set(&body, "privileged"));
        let host = field(&body, "hostconfig").unwrap();
        assert_eq!(strings(host, "binds"), vec!["/:/host"]);
        // U+017F folds to `s`, as in Go.
        let body = parse("{\"Bind\u{17f}\": [\"/:/h\"]}".as_bytes()).unwrap();
        assert_eq!(strings(&body, "binds"), vec!["/:/h"]);
        assert!(!is_set(&body, "privileged"));
        assert!(!is_set(
            &parse(br#"{"Privileged": false, "CapAdd": []}"#).unwrap(),
            "capadd"
        ));
    }

    #[test]
    fn repeated_keys_and_trailing_data_are_refused() {
        for body in [
            r#"{"HostConfig": {"Memory": 1}, "HostConfig": {"Privileged": true}}"#,
            r#"{"Privileged": false, "privileged": true}"#,
            r#"{"a": {"b": 1, "B": 2}}"#,
            r#"[{"x": 1, "x": 2}]"#,
            r#"{"Image": "x"}{"Privileged": true}"#,
            r#"{"Image": "x""#,
            "\u{17f}",
        ] {
            assert!(parse(body.as_bytes()).is_err(), "{body}");
        }
        assert!(parse(br#"{"a": 1, "b": [1, 2.5, null, "s", {"c": {}}]}"#).is_ok());
    }
}
