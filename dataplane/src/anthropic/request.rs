//! Reads what the gateway needs from a Messages request body (model, stream, max_tokens) in
//! one pass, and renames the model by splicing bytes: everything else (unknown fields, the
//! `system` array, key order, whitespace) reaches the provider byte for byte.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest model name accepted (model ids, aliases and Bedrock ARNs are far shorter).
pub const MAX_MODEL_LEN: usize = 256;

/// The fields of a Messages request the gateway acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// Requested model name.
    pub model: String,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Requested output ceiling.
    pub max_tokens: Option<u64>,
    /// Byte range of the model's JSON string (quotes included) in the body.
    model_span: (usize, usize),
}

/// Most `anthropic-beta` flags a request may carry (Claude Code sends about ten).
pub const MAX_BETAS: usize = 64;

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

/// Checks the headers the API requires of a Messages (or count_tokens) request, as the API
/// does: `anthropic-version` present, and a body declared as JSON when its type is declared
/// at all (an absent `content-type` is accepted: the body must parse as JSON anyway). The
/// error is a message for an `invalid_request_error` (400, the API's status for a malformed
/// request; its documented errors have no 415).
pub fn check_headers(headers: &http::HeaderMap) -> Result<(), String> {
    if !headers.contains_key("anthropic-version") {
        return Err("anthropic-version: header is required".into());
    }
    let betas: usize = headers
        .get_all("anthropic-beta")
        .iter()
        .map(|v| v.as_bytes().split(|b| *b == b',').count())
        .sum();
    if betas > MAX_BETAS {
        return Err(format!(
            "anthropic-beta: at most {MAX_BETAS} beta flags are accepted (got {betas})"
        ));
    }
    check_content_type(headers)
}

/// A body declared as JSON when its type is declared at all (every API format the gateway
/// serves takes JSON).
pub fn check_content_type(headers: &http::HeaderMap) -> Result<(), String> {
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
        let text = String::from_utf8_lossy(ct.as_bytes());
        let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(format!("content-type: must be application/json (got {text:?})"));
        }
    }
    Ok(())
}

/// Parses the body (a JSON object: serde would also read `Fields` from an array in field
/// order, which no provider accepts); the error is a message for an `invalid_request_error`.
pub fn inspect(body: &[u8]) -> Result<RequestInfo, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err("body is not a valid JSON object: the request body must be an object".into());
    }
    let fields: Fields<'_> =
        serde_json::from_slice(body).map_err(|e| format!("body is not a valid JSON object: {e}"))?;
    let raw = fields.model.ok_or("model: field required")?;
    let model: String = serde_json::from_str(raw.get()).map_err(|_| "model: must be a string".to_owned())?;
    if model.is_empty() {
        return Err("model: must not be empty".into());
    }
    if model.len() > MAX_MODEL_LEN {
        return Err(format!(
            "model: must be at most {MAX_MODEL_LEN} bytes (got {})",
            model.len()
        ));
    }
    if model.chars().any(char::is_control) {
        return Err("model: must not contain control characters".into());
    }
    // RawValue borrows from `body`, so its address locates it in the buffer.
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    Ok(RequestInfo {
        model,
        stream: fields.stream.unwrap_or(false),
        max_tokens: fields.max_tokens,
        model_span: (start, start + raw.get().len()),
    })
}

impl RequestInfo {
    /// The body with the model replaced by `new_model`; nothing else changes.
    pub fn rewrite_model(&self, body: &Bytes, new_model: &str) -> Bytes {
        let quoted = serde_json::Value::from(new_model).to_string();
        let (start, end) = self.model_span;
        let mut out = BytesMut::with_capacity(body.len() - (end - start) + quoted.len());
        out.extend_from_slice(&body[..start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[end..]);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_and_rewrites_only_the_model() {
        let body = Bytes::from_static(
            br#"{ "max_tokens": 64000, "system": [{"type":"text","text":"a \"model\": x"}], "model" :  "gw-opus" , "stream":true, "future_field": {"model": "inner"} }"#,
        );
        let info = inspect(&body).unwrap();
        assert_eq!(info.model, "gw-opus");
        assert!(info.stream);
        assert_eq!(info.max_tokens, Some(64000));
        let out = info.rewrite_model(&body, "claude-opus-4-8");
        let expected = String::from_utf8(body.to_vec())
            .unwrap()
            .replace(r#""gw-opus""#, r#""claude-opus-4-8""#);
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    }

    #[test]
    fn escaped_model_names_round_trip() {
        let body = Bytes::from_static(br#"{"model":"a\u0062c","messages":[]}"#);
        let info = inspect(&body).unwrap();
        assert_eq!(info.model, "abc");
        assert_eq!(
            &info.rewrite_model(&body, "x\"y")[..],
            br#"{"model":"x\"y","messages":[]}"#
        );
    }

    #[test]
    fn the_real_claude_code_body_survives_byte_for_byte() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/messages-request-claude-code.json"
        );
        let body = Bytes::from(std::fs::read(path).unwrap());
        let info = inspect(&body).unwrap();
        assert_eq!(info.model, "claude-opus-4-8");
        let out = info.rewrite_model(&body, "claude-opus-4-8");
        assert_eq!(out, body);
        let renamed = info.rewrite_model(&body, "m");
        let a: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut b: serde_json::Value = serde_json::from_slice(&renamed).unwrap();
        b["model"] = a["model"].clone();
        assert_eq!(a, b);
    }

    #[test]
    fn headers_are_checked_as_the_api_does() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            check_headers(&h)
        };
        let v = ("anthropic-version", "2023-06-01");
        assert_eq!(headers(&[v]), Ok(()), "no content-type: the body decides");
        assert_eq!(headers(&[v, ("content-type", "application/json")]), Ok(()));
        assert_eq!(
            headers(&[v, ("content-type", "Application/JSON; charset=utf-8")]),
            Ok(())
        );
        assert_eq!(headers(&[v, ("content-type", "application/vnd.x+json")]), Ok(()));
        assert!(
            headers(&[v, ("content-type", "text/plain")])
                .unwrap_err()
                .contains("content-type")
        );
        assert!(
            headers(&[v, ("content-type", "application/x-www-form-urlencoded")])
                .unwrap_err()
                .contains("application/json")
        );
        assert_eq!(
            headers(&[("content-type", "application/json")]),
            Err("anthropic-version: header is required".into())
        );
    }

    #[test]
    fn bad_bodies_get_clear_messages() {
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_LEN + 1));
        assert!(
            inspect(long.as_bytes())
                .unwrap_err()
                .contains("at most 256 bytes")
        );
        for (body, want) in [
            (&b"not json"[..], "not a valid JSON object"),
            (br#"{"messages":[]}"#, "model: field required"),
            (br#"{"model":42}"#, "model: must be a string"),
            (br#"{"model":""}"#, "must not be empty"),
            (br#"{"model":"claude\u0000"}"#, "control characters"),
            (br#"{"model":"claude\nopus"}"#, "control characters"),
            (br#"{"model":"claude\u009b"}"#, "control characters"),
            (br#"[1,2]"#, "not a valid JSON object"),
            // serde would read the fields from an array in order: refused as not an object.
            (br#"["gw-vertex",false,16]"#, "must be an object"),
            (br#"  "claude""#, "must be an object"),
        ] {
            let err = inspect(body).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }
}
