//! The canonical JSON encoding records are hashed over (see the [module docs](super)).

use serde_json::Value;

use super::AuditError;

/// Appends the canonical encoding of `v` to `out`.
pub fn encode_into(v: &Value, out: &mut Vec<u8>) -> Result<(), AuditError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err(AuditError::Canonical(format!("non-integer number {n}")));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode_into(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here, not by the map: serde_json's map order depends on a crate feature.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, val)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                encode_into(val, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// The canonical encoding of `v`.
pub fn encode(v: &Value) -> Result<Vec<u8>, AuditError> {
    let mut out = Vec::with_capacity(256);
    encode_into(v, &mut out)?;
    Ok(out)
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn enc(v: Value) -> String {
        String::from_utf8(encode(&v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        assert_eq!(
            enc(json!({"b": 1, "a": [true, null, -3], "A": {"z": "x", "y": {}}})),
            r#"{"A":{"y":{},"z":"x"},"a":[true,null,-3],"b":1}"#
        );
    }

    #[test]
    fn escapes_like_rfc_8785() {
        assert_eq!(
            enc(json!("q\"b\\\u{8}\t\n\u{c}\r\u{1}\u{1f}/\u{7f}é\u{2028}")),
            "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001f/\u{7f}é\u{2028}\""
        );
        // Agrees with serde_json's own string escaping.
        let s = "a\u{0}b\u{1b}c\"\\";
        assert_eq!(enc(json!(s)), serde_json::to_string(s).unwrap());
    }

    #[test]
    fn refuses_floats() {
        assert!(encode(&json!({"x": 1.5})).is_err());
        assert_eq!(enc(json!(u64::MAX)), u64::MAX.to_string());
    }
}
