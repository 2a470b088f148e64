//! Reading Google's JSON the way Google does: proto3 JSON accepts a field under its
//! lowerCamelCase name and under its proto name (`maxOutputTokens` and `max_output_tokens`),
//! so every field the gateway judges is looked up under both, and a field given twice (in
//! either spelling) is refused: Google and the gateway might read different ones.
//! <https://protobuf.dev/programming-guides/json/>

use std::borrow::Cow;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of a JSON object in order, names decoded, values as raw JSON text.
pub(crate) struct Members<'a>(pub(crate) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Members<'a> {
    /// The members of the object `raw`; the error names `field`.
    pub(crate) fn of(raw: &'a RawValue, field: &str) -> Result<Self, String> {
        serde_json::from_str(raw.get()).map_err(|e| format!("{field}: must be an object: {e}"))
    }

    /// The value of the field named `camel` (lowerCamelCase) in either spelling; `None` when
    /// absent or null. Two members naming it are refused.
    pub(crate) fn get(&self, camel: &str, path: &str) -> Result<Option<&'a RawValue>, String> {
        let mut found = self.0.iter().filter(|(k, _)| same_field(k, camel));
        let first = found.next().map(|(_, v)| *v);
        if found.next().is_some() {
            return Err(format!("{path}{camel}: given more than once"));
        }
        Ok(first.filter(|v| v.get() != "null"))
    }
}

/// Whether the member `name` is the field `camel` (lowerCamelCase) in either proto3 JSON
/// spelling.
pub(crate) fn same_field(name: &str, camel: &str) -> bool {
    name == camel || (name.contains('_') && lower_camel(name) == camel)
}

/// `snake_case` -> `snakeCase` (proto3 JSON's name mapping); other names unchanged.
pub(crate) fn lower_camel(name: &str) -> Cow<'_, str> {
    if !name.contains('_') {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A token count as proto3 JSON writes an integer: a number, or a string of one. Anything
/// else (negative, fractional, another type) reads as `None`.
pub(crate) fn count(raw: &RawValue) -> Option<u64> {
    let text = raw.get();
    let unquoted = match serde_json::from_str::<Cow<'_, str>>(text) {
        Ok(s) => return s.trim().parse::<u64>().ok(),
        Err(_) => text,
    };
    if let Ok(n) = unquoted.parse::<u64>() {
        return Some(n);
    }
    // `1e3` and `1000.0` are integers to a JSON number parser.
    let f = serde_json::from_str::<f64>(unquoted).ok()?;
    (f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&f)).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn names_in_either_spelling() {
        assert_eq!(lower_camel("max_output_tokens"), "maxOutputTokens");
        assert_eq!(lower_camel("tools"), "tools");
        assert!(same_field("function_declarations", "functionDeclarations"));
        assert!(same_field("functionDeclarations", "functionDeclarations"));
        assert!(!same_field("FunctionDeclarations", "functionDeclarations"));
        let m: Members<'_> = serde_json::from_str(r#"{"a_b":1,"aB":2,"c":null}"#).unwrap();
        assert!(
            m.get("aB", "x.")
                .unwrap_err()
                .contains("x.aB: given more than once")
        );
        assert!(m.get("c", "").unwrap().is_none());
        assert!(m.get("d", "").unwrap().is_none());
    }

    #[test]
    fn counts_as_proto3_json_writes_them() {
        for (text, want) in [
            ("12", Some(12)),
            ("\"12\"", Some(12)),
            ("1e3", Some(1000)),
            ("5.0", Some(5)),
            ("-1", None),
            ("1.5", None),
            ("true", None),
            ("{}", None),
            ("\"x\"", None),
            ("1e300", None),
        ] {
            assert_eq!(count(&raw(text)), want, "{text}");
        }
    }
}
