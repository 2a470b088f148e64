//! Reads what the gateway needs from a Responses or Chat Completions request body (model,
//! stream, output limit) in one pass, and renames the model by splicing bytes: everything else
//! (unknown fields, `instructions`, `input`/`messages`, key order, whitespace) reaches the
//! provider byte for byte, so OpenAI's automatic prompt caching keeps matching.
//!
//! Fields read, per API (<https://platform.openai.com/docs/api-reference/responses/create>,
//! <https://platform.openai.com/docs/api-reference/chat/create>):
//!
//! | field | Responses | Chat |
//! | --- | --- | --- |
//! | `model` | required string | required string |
//! | `stream` | bool or null | bool or null |
//! | output limit | `max_output_tokens` | `max_completion_tokens`, else the deprecated `max_tokens` |
//! | `n` (choices) | - | integer or null |
//!
//! A duplicated field the gateway reads is refused: the provider and the gateway might read
//! different copies.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use super::Api;
use crate::providers::body_edit::{self, BodyEdit};

/// Longest model name accepted (OpenAI's ids and fine-tune names are far shorter).
pub const MAX_MODEL_LEN: usize = 256;

/// The fields of a Responses or Chat Completions request the gateway acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Requested model name.
    pub model: String,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// The requested output ceiling per choice: `max_output_tokens` (Responses),
    /// `max_completion_tokens` or else `max_tokens` (Chat); reasoning tokens count against it.
    pub max_tokens: Option<u64>,
    /// Chat's `n`, the number of choices (each may use `max_tokens`); 1 for Responses.
    pub choices: u64,
    /// Byte range of the model's JSON string (quotes included) in the body.
    model_span: (usize, usize),
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    n: Option<&'a RawValue>,
    // Read so that a duplicate is refused (a provider keeps the last copy, the gateway would
    // judge the first: `stream_options` twice could switch the usage chunk off), and checked.
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    service_tier: Option<&'a RawValue>,
    #[serde(borrow, default)]
    background: Option<&'a RawValue>,
}

/// Parses the body of a request to `api` (a JSON object); the error is a message for a 400
/// `invalid_request_error` and names the field.
pub fn inspect(api: Api, body: &[u8]) -> Result<Info, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err("body is not a valid JSON object: the request body must be an object".into());
    }
    let fields: Fields<'_> =
        serde_json::from_slice(body).map_err(|e| format!("body is not a valid JSON object: {e}"))?;
    let raw = fields.model.ok_or("model: field required")?;
    let model = model_name(raw)?;
    let stream = match fields.stream.map(RawValue::get) {
        None | Some("null") => false,
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err("stream: must be a boolean".into()),
    };
    // Priority, flex and scale tiers are billed at other prices than the table's: refused
    // rather than metered at the standard price.
    match fields.service_tier.map(RawValue::get) {
        None | Some("null" | "\"auto\"" | "\"default\"") => {}
        Some(tier) => {
            return Err(format!(
                "service_tier: {tier} is not available through this gateway (its price is not metered); use \"auto\" or \"default\""
            ));
        }
    }
    // A background response is generated after the answer: nothing the gateway could meter.
    if !matches!(
        fields.background.map(RawValue::get),
        None | Some("null" | "false")
    ) {
        return Err("background: background responses are not available through this gateway".into());
    }
    let _ = fields.stream_options;
    let (max_tokens, choices) = match api {
        Api::Responses => (count("max_output_tokens", fields.max_output_tokens)?, 1),
        Api::Chat => {
            let limit = match count("max_completion_tokens", fields.max_completion_tokens)? {
                Some(limit) => Some(limit),
                None => count("max_tokens", fields.max_tokens)?,
            };
            (limit, count("n", fields.n)?.unwrap_or(1).max(1))
        }
    };
    // RawValue borrows from `body`, so its address locates it in the buffer.
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    Ok(Info {
        model,
        stream,
        max_tokens,
        choices,
        model_span: (start, start + raw.get().len()),
    })
}

/// The model name, checked as the Anthropic reader checks it.
fn model_name(raw: &RawValue) -> Result<String, String> {
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
    Ok(model)
}

/// A non-negative integer field; null reads as absent.
fn count(field: &str, raw: Option<&RawValue>) -> Result<Option<u64>, String> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Option<u64>>(raw.get())
            .map_err(|_| format!("{field}: must be a non-negative integer")),
    }
}

impl Info {
    /// The body with the model replaced by `new_model`; nothing else changes. `body` must be
    /// the body this `Info` was read from.
    pub fn rewrite_model(&self, body: &Bytes, new_model: &str) -> Bytes {
        let quoted = serde_json::Value::from(new_model).to_string();
        let (start, end) = self.model_span;
        let mut out = BytesMut::with_capacity(body.len() - (end - start) + quoted.len());
        out.extend_from_slice(&body[..start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[end..]);
        out.freeze()
    }

    /// The most output tokens the response may have, when the request says: `max_tokens`
    /// times the number of choices.
    pub fn output_ceiling(&self) -> Option<u64> {
        self.max_tokens.map(|m| m.saturating_mul(self.choices))
    }
}

#[derive(Deserialize)]
struct StreamFields<'a> {
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
}

/// A Chat Completions body that makes a stream end with its usage chunk: when `stream` is true
/// and `stream_options.include_usage` is not, `include_usage: true` is set (the other members
/// of `stream_options` kept; that small object alone is re-serialized, its keys sorted). Without
/// it OpenAI sends no usage in a stream and the gateway could only estimate the cost.
///
/// Any other body comes back as it is (the same bytes): not streaming, usage already asked for,
/// or not something the gateway can edit (not an object, duplicate `stream_options`, a
/// `stream_options` that is not an object: the provider refuses those itself).
///
/// The client then receives one chunk it did not ask for, with `choices: []` (OpenAI's SDKs
/// accept it; a client indexing `choices[0]` of every chunk would not).
pub fn ensure_usage_in_stream(body: &Bytes) -> Bytes {
    let Ok(fields) = serde_json::from_slice::<StreamFields<'_>>(body) else {
        return body.clone();
    };
    if fields.stream.map(RawValue::get) != Some("true") {
        return body.clone();
    }
    let mut options = match fields.stream_options.map(|raw| serde_json::from_str(raw.get())) {
        None | Some(Ok(serde_json::Value::Null)) => serde_json::Map::new(),
        Some(Ok(serde_json::Value::Object(map))) => map,
        Some(_) => return body.clone(),
    };
    if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return body.clone();
    }
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    let edit = BodyEdit {
        set: vec![("stream_options", serde_json::Value::Object(options))],
        ..BodyEdit::default()
    };
    body_edit::edit(body, &edit).unwrap_or_else(|_| body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_responses_fields_and_rewrites_only_the_model() {
        let body = Bytes::from_static(
            br#"{ "instructions": "model: \"x\"", "model" :  "gw-codex" , "stream":true, "max_output_tokens": 32000, "max_tokens": 5, "input":[{"role":"user","content":"hi","model":"inner"}] }"#,
        );
        let info = inspect(Api::Responses, &body).unwrap();
        assert_eq!(info.model, "gw-codex");
        assert!(info.stream);
        assert_eq!(
            info.max_tokens,
            Some(32000),
            "max_tokens is not a Responses field"
        );
        assert_eq!((info.choices, info.output_ceiling()), (1, Some(32000)));
        let out = info.rewrite_model(&body, "gpt-5.3-codex");
        let expected = String::from_utf8(body.to_vec())
            .unwrap()
            .replace(r#""gw-codex""#, r#""gpt-5.3-codex""#);
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        assert_eq!(info.rewrite_model(&body, "gw-codex"), body);
    }

    #[test]
    fn chat_limit_prefers_max_completion_tokens_and_counts_choices() {
        let info = |body: &str| inspect(Api::Chat, body.as_bytes()).unwrap();
        let both = info(r#"{"model":"gpt-4.1","max_tokens":10,"max_completion_tokens":20,"n":3}"#);
        assert_eq!(
            (both.max_tokens, both.choices, both.output_ceiling()),
            (Some(20), 3, Some(60))
        );
        let legacy = info(r#"{"model":"gpt-4.1","max_tokens":10,"max_completion_tokens":null}"#);
        assert_eq!((legacy.max_tokens, legacy.choices), (Some(10), 1));
        let none = info(r#"{"model":"gpt-4.1","stream":null,"n":null,"max_output_tokens":7}"#);
        assert_eq!((none.max_tokens, none.stream, none.choices), (None, false, 1));
        assert_eq!(info(r#"{"model":"m","n":0}"#).choices, 1);
    }

    #[test]
    fn escaped_model_names_round_trip() {
        let body = Bytes::from_static(br#"{"model":"gpt\u002d5","input":"x"}"#);
        let info = inspect(Api::Responses, &body).unwrap();
        assert_eq!(info.model, "gpt-5");
        assert_eq!(
            &info.rewrite_model(&body, "a\"b")[..],
            br#"{"model":"a\"b","input":"x"}"#
        );
    }

    #[test]
    fn bad_bodies_get_messages_naming_the_field() {
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_LEN + 1));
        assert!(
            inspect(Api::Chat, long.as_bytes())
                .unwrap_err()
                .contains("at most 256 bytes")
        );
        for (api, body, want) in [
            (Api::Chat, &b"not json"[..], "not a valid JSON object"),
            (Api::Chat, br#"["gpt-5",true]"#, "must be an object"),
            (Api::Responses, br#"  "gpt-5""#, "must be an object"),
            (Api::Responses, br#"{"input":"x"}"#, "model: field required"),
            (Api::Responses, br#"{"model":42}"#, "model: must be a string"),
            (Api::Responses, br#"{"model":null}"#, "model: field required"),
            (Api::Chat, br#"{"model":""}"#, "model: must not be empty"),
            (Api::Chat, br#"{"model":"gpt\u0000"}"#, "control characters"),
            (
                Api::Chat,
                br#"{"model":"m","stream":"yes"}"#,
                "stream: must be a boolean",
            ),
            (
                Api::Chat,
                br#"{"model":"m","stream":1}"#,
                "stream: must be a boolean",
            ),
            (
                Api::Responses,
                br#"{"model":"m","max_output_tokens":-1}"#,
                "max_output_tokens: must be a non-negative integer",
            ),
            (
                Api::Chat,
                br#"{"model":"m","max_completion_tokens":1.5}"#,
                "max_completion_tokens: must be",
            ),
            (
                Api::Chat,
                br#"{"model":"m","max_tokens":"9"}"#,
                "max_tokens: must be",
            ),
            (Api::Chat, br#"{"model":"m","n":-2}"#, "n: must be"),
            (
                Api::Chat,
                br#"{"model":"a","model":"b"}"#,
                "duplicate field `model`",
            ),
            (
                Api::Responses,
                br#"{"model":"a","stream":false,"stream":true}"#,
                "duplicate field `stream`",
            ),
            (Api::Chat, br#"{"model":"a""#, "not a valid JSON object"),
        ] {
            let err = inspect(api, body).unwrap_err();
            assert!(
                err.contains(want),
                "{api:?} {}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        // A field the other API reads is not judged.
        assert!(inspect(Api::Responses, br#"{"model":"m","max_tokens":"x","n":"y"}"#).is_ok());
        assert!(inspect(Api::Chat, br#"{"model":"m","max_output_tokens":"x"}"#).is_ok());
    }

    #[test]
    fn stream_usage_is_asked_for_only_when_missing() {
        let ensure = |body: &str| {
            let body = Bytes::from(body.to_owned());
            let out = ensure_usage_in_stream(&body);
            String::from_utf8(out.to_vec()).unwrap()
        };
        // Added, the rest of the body byte for byte.
        assert_eq!(
            ensure(r#"{"model":"m","messages":[{"role":"user","content":"a  b"}],"stream":true}"#),
            r#"{"model":"m","messages":[{"role":"user","content":"a  b"}],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        // Replaced in place, other options kept.
        assert_eq!(
            ensure(
                r#"{"stream_options":{"include_usage":false,"include_obfuscation":false},"stream":true,"model":"m"}"#
            ),
            r#"{"stream_options":{"include_obfuscation":false,"include_usage":true},"stream":true,"model":"m"}"#
        );
        assert_eq!(
            ensure(r#"{"model":"m","stream":true,"stream_options":null}"#),
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );
        // Left alone: the same bytes.
        for body in [
            r#"{"model":"m", "stream": true, "stream_options": {"include_usage": true}}"#,
            r#"{"model":"m", "stream": false}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m", "stream": null}"#,
            r#"{"model":"m", "stream": true, "stream_options": "x"}"#,
            r#"{"model":"m", "stream": true, "stream_options": {}, "stream_options": {}}"#,
            r#"[1]"#,
            r#"{"model":"m", "stream": true"#,
        ] {
            assert_eq!(ensure(body), body);
        }
    }
}
