//! Editing the top level of a JSON request body without re-serializing what it does not
//! touch: every other member keeps its bytes and its order (prompt caching keys on the
//! rendered prompt, so nested objects are never reordered or reformatted).

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of a JSON object, in order, values as raw JSON text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// An edit of a body's top-level members.
#[derive(Debug, Default)]
pub struct BodyEdit<'a> {
    /// Members removed (every occurrence).
    pub remove: &'a [&'a str],
    /// Members set: replaced in place when present, else appended, in this order.
    pub set: Vec<(&'a str, serde_json::Value)>,
    /// Members appended only when absent.
    pub default: Vec<(&'a str, serde_json::Value)>,
}

/// Applies `edit` to the JSON object `body`; the error says why the body is not one.
pub fn edit(body: &[u8], edit: &BodyEdit<'_>) -> Result<Bytes, String> {
    let Members(members) = serde_json::from_slice::<Members<'_>>(body)
        .map_err(|e| format!("the request body is not a JSON object: {e}"))?;
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut push = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.extend_from_slice(serde_json::Value::from(k).to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(v);
    };
    let mut set_done = vec![false; edit.set.len()];
    for (k, v) in &members {
        if edit.remove.contains(&k.as_str()) {
            continue;
        }
        if let Some(i) = edit.set.iter().position(|(name, _)| name == k) {
            if !std::mem::replace(&mut set_done[i], true) {
                push(&mut out, k, edit.set[i].1.to_string().as_bytes());
            }
            continue;
        }
        push(&mut out, k, v.get().as_bytes());
    }
    for (i, (k, v)) in edit.set.iter().enumerate() {
        if !set_done[i] {
            push(&mut out, k, v.to_string().as_bytes());
        }
    }
    for (k, v) in &edit.default {
        if !members.iter().any(|(name, _)| name == k) && !edit.set.iter().any(|(name, _)| name == k) {
            push(&mut out, k, v.to_string().as_bytes());
        }
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removes_sets_and_defaults_keeping_the_rest_byte_for_byte() {
        let body = br#"{"model":"m","stream":true,"tools":[{"name":"t","input_schema":{"z":1,"a":2}}],"system":[{"type":"text","text":"x"}],"anthropic_version":"keep"}"#;
        let out = edit(
            body,
            &BodyEdit {
                remove: &["model", "stream"],
                set: vec![("anthropic_beta", json!(["b1"]))],
                default: vec![
                    ("anthropic_version", json!("bedrock-2023-05-31")),
                    ("max_tokens", json!(5)),
                ],
            },
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"tools":[{"name":"t","input_schema":{"z":1,"a":2}}],"system":[{"type":"text","text":"x"}],"anthropic_version":"keep","anthropic_beta":["b1"],"max_tokens":5}"#
        );
    }

    #[test]
    fn a_set_member_is_replaced_in_place_and_non_objects_are_refused() {
        let out = edit(
            br#"{"a":1,"b":2}"#,
            &BodyEdit {
                set: vec![("a", json!("x"))],
                ..BodyEdit::default()
            },
        )
        .unwrap();
        assert_eq!(&out[..], br#"{"a":"x","b":2}"#);
        assert!(edit(b"[1]", &BodyEdit::default()).is_err());
        assert!(edit(b"{\"a\":", &BodyEdit::default()).is_err());
    }
}
