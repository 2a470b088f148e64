//! The Amazon Bedrock mode of the fake: the same server also answers Bedrock's `InvokeModel`
//! (`POST /model/{modelId}/invoke`) and `InvokeModelWithResponseStream`
//! (`POST /model/{modelId}/invoke-with-response-stream`) for Anthropic models, with the replies
//! of the Messages API path, so a benchmark can compare a gateway's Bedrock target with its
//! Anthropic target on one upstream.
//!
//! * **Authentication is only checked for shape**: an `authorization` header starting with
//!   `AWS4-HMAC-SHA256 Credential=` and an `x-amz-date` header must be present (else 401
//!   `UnrecognizedClientException`). The signature itself is *not* verified here, so that this
//!   path stays as cheap as the Anthropic one; the SigV4 math is verified elsewhere, by botocore,
//!   in the Python fake Bedrock (`e2e/fakes/bedrock.py`, [`crate::fake_bedrock`]). No
//!   `x-api-key` is needed.
//! * **Body**: Bedrock's InvokeModel body for Anthropic models: no `model` and no `stream` (they
//!   are in the path; present, they are refused as Bedrock does: `extraneous key [model] is not
//!   permitted`), `anthropic_version` equal to [`ANTHROPIC_VERSION`], `max_tokens` required,
//!   `anthropic_beta` (if present) a list of strings. Refusals are 400 `ValidationException`
//!   with `x-amzn-ErrorType` and `{"message": ...}`, as Bedrock sends them.
//! * **JSON answer**: the fake's usual message (the path's model id, percent-decoded, as its
//!   `model`) with Bedrock's `x-amzn-bedrock-*-token-count` and `-invocation-latency` headers.
//! * **Stream**: `application/vnd.amazon.eventstream`; each SSE event the fake would send on
//!   `/v1/messages` becomes one `chunk` event message (`:event-type` `chunk`, `:content-type`
//!   `application/json`, `:message-type` `event`) whose payload is `{"bytes": base64(event
//!   JSON), "p": padding}` with correct prelude and message CRC32s; pings are dropped and
//!   `message_stop` gets Bedrock's `amazon-bedrock-invocationMetrics`. Each message is its own
//!   body frame, written as produced.
//! * Scenarios ([`super::Scenario`]) do not apply on these paths: every answer is the complete
//!   default-shaped reply (text, tool-result echo or tool use, as on `/v1/messages`).
//!
//! Requests are recorded like the others, with the usage returned.

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::reply::{self, Ids, Invalid, StreamShape, Tokens};
use super::{FakeBody, Outcome, Shared, TOOL_TRIGGER};

/// The `anthropic_version` Bedrock requires in the body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The prefix of the `authorization` header the Bedrock paths require (shape only, see the
/// module docs).
pub const SIGV4_PREFIX: &str = "AWS4-HMAC-SHA256 Credential=";

/// The content type of a Bedrock response stream.
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// Namespace of `x-amzn-ErrorType` values.
const ERROR_NS: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";

/// Is `path` one of the Bedrock paths (`/model/...`)?
pub(super) fn is_bedrock_path(path: &str) -> bool {
    path.starts_with("/model/")
}

/// Encodes one AWS event-stream message with string headers (type 7): prelude (total length,
/// headers length, their CRC32), headers, payload, message CRC32. Header names longer than 255
/// bytes and values longer than 65535 bytes are truncated (never produced by the fake).
pub fn event_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum());
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(255)];
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        h.push(name.len() as u8);
        h.extend_from_slice(name);
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value);
    }
    let total = 16 + h.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The `chunk` event message carrying one Anthropic stream event (its JSON).
fn chunk_message(event_json: &[u8], pad: usize) -> Bytes {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut payload = Vec::with_capacity(event_json.len() * 4 / 3 + 40);
    payload.extend_from_slice(br#"{"bytes":""#);
    let encoded = base64::engine::general_purpose::STANDARD.encode(event_json);
    payload.extend_from_slice(encoded.as_bytes());
    payload.extend_from_slice(br#"","p":""#);
    payload.extend_from_slice(&LETTERS[..pad.clamp(1, LETTERS.len())]);
    payload.extend_from_slice(br#""}"#);
    Bytes::from(event_message(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &payload,
    ))
}

/// The event name and data of one `event: NAME\ndata: JSON\n\n` SSE event built by the fake.
fn split_sse(event: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = event.strip_prefix(b"event: ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let (name, rest) = (&rest[..nl], &rest[nl + 1..]);
    let data = rest.strip_prefix(b"data: ")?;
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    Some((name, &data[..end]))
}

/// A Bedrock error: `{"message": ...}` with `x-amzn-ErrorType: KIND:NAMESPACE`.
fn aws_error(status: u16, kind: &str, message: &str, request_id: &str) -> Outcome {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(&json!({ "message": message })).unwrap_or_default();
    let mut response = Response::new(FakeBody::full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&format!("{kind}:{ERROR_NS}")) {
        headers.insert("x-amzn-errortype", v);
    }
    set_aws_request_id(&mut response, request_id);
    response.into()
}

fn malformed(detail: &str, request_id: &str) -> Outcome {
    aws_error(
        400,
        "ValidationException",
        &format!("Malformed input request: #: {detail}, please reformat your input and try again."),
        request_id,
    )
}

fn set_aws_request_id(response: &mut Response<FakeBody>, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
}

/// Percent-decodes a path label (`%3A` to `:`); `None` for an invalid escape or non-UTF-8.
fn percent_decode(label: &str) -> Option<String> {
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The top-level members the Bedrock checks and the reply need; everything else is skipped.
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow)]
    anthropic_version: Option<&'a RawValue>,
    #[serde(borrow)]
    anthropic_beta: Option<&'a RawValue>,
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
}

/// Answers `POST /model/{id}/invoke` and `/invoke-with-response-stream` (see the module docs).
pub(super) async fn invoke(shared: &Shared, parts: &Parts, body: &Bytes, request_id: &str) -> Outcome {
    let path = parts.uri.path();
    let rest = path.strip_prefix("/model/").unwrap_or_default();
    let (label, stream) = match rest.rsplit_once('/') {
        Some((label, "invoke")) => (label, false),
        Some((label, "invoke-with-response-stream")) => (label, true),
        _ => {
            return aws_error(
                404,
                "UnknownOperationException",
                &format!("fake-anthropic (Bedrock mode): no operation at {path}"),
                request_id,
            );
        }
    };
    let model = match percent_decode(label) {
        Some(m) if !m.is_empty() && !label.contains('/') => m,
        _ => {
            return aws_error(
                400,
                "ValidationException",
                "The provided model identifier is invalid.",
                request_id,
            );
        }
    };

    let signed = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(SIGV4_PREFIX.as_bytes()))
        && parts.headers.contains_key("x-amz-date");
    if !signed {
        return aws_error(
            401,
            "UnrecognizedClientException",
            "fake-anthropic (Bedrock mode): a SigV4 `authorization` (AWS4-HMAC-SHA256 \
             Credential=...) and `x-amz-date` are required",
            request_id,
        );
    }

    let top: Top<'_> = match serde_json::from_slice(body) {
        Ok(top) => top,
        Err(e) if e.is_data() => return malformed(&format!("expected type: JSONObject ({e})"), request_id),
        Err(_) => {
            return aws_error(
                400,
                "ValidationException",
                "Malformed input request, please reformat your input and try again.",
                request_id,
            );
        }
    };
    for (key, present) in [("model", top.model.is_some()), ("stream", top.stream.is_some())] {
        if present {
            return malformed(&format!("extraneous key [{key}] is not permitted"), request_id);
        }
    }
    match top
        .anthropic_version
        .map(|v| serde_json::from_str::<&str>(v.get()))
    {
        None => return malformed("required key [anthropic_version] not found", request_id),
        Some(Ok(ANTHROPIC_VERSION)) => {}
        Some(_) => return aws_error(400, "ValidationException", "Invalid API version", request_id),
    }
    let Some(max_tokens) = top.max_tokens else {
        return malformed("required key [max_tokens] not found", request_id);
    };
    if let Some(betas) = top.anthropic_beta {
        if serde_json::from_str::<Vec<&str>>(betas.get()).is_err() {
            return malformed("anthropic_beta: expected type: JSONArray", request_id);
        }
    }

    // The reply logic of `/v1/messages`, fed a small body: the model from the path, and only the
    // members the reply depends on (`tools` only matters with the Bash trigger in a prompt).
    let model_json = Value::from(model.as_str()).to_string();
    let messages = top.messages.map_or("null", |m| m.get());
    let mut small = format!(
        r#"{{"model":{model_json},"max_tokens":{},"messages":{messages}"#,
        max_tokens.get()
    );
    if let Some(tools) = top.tools.filter(|_| messages.contains(TOOL_TRIGGER)) {
        small.push_str(r#","tools":"#);
        small.push_str(tools.get());
    }
    small.push('}');
    let request = match reply::parse_messages_request(small.as_bytes(), true) {
        Ok(r) => r,
        Err(Invalid(message)) => return aws_error(400, "ValidationException", &message, request_id),
    };

    let output = reply::output_tokens(&request.reply);
    let tokens = Tokens::new(body.len(), false, output);
    let message_id = shared.id("msg_bdrk_");
    let tool_use_id = if matches!(
        request.reply,
        reply::Reply::BashToolUse | reply::Reply::ToolUse { .. }
    ) {
        shared.id("toolu_bdrk_")
    } else {
        String::new()
    };
    let ids = Ids {
        message_id: &message_id,
        tool_use_id: &tool_use_id,
    };
    let usage = tokens.usage(tokens.output);

    if !stream {
        let message = reply::message_json(&model, &request.reply, &tokens, &ids);
        let bytes = serde_json::to_vec(&message).unwrap_or_default();
        let mut response = Response::new(FakeBody::full(bytes));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            "x-amzn-bedrock-input-token-count",
            HeaderValue::from(tokens.input),
        );
        headers.insert(
            "x-amzn-bedrock-output-token-count",
            HeaderValue::from(tokens.output),
        );
        headers.insert("x-amzn-bedrock-invocation-latency", HeaderValue::from(1u32));
        set_aws_request_id(&mut response, request_id);
        return Outcome {
            response,
            usage: Some(usage),
        };
    }

    let events = reply::sse_events(
        &model,
        &request.reply,
        &tokens,
        &ids,
        StreamShape::Complete,
        false,
    );
    let mut frames = Vec::with_capacity(events.len());
    for (n, event) in events.iter().enumerate() {
        let Some((name, data)) = split_sse(event) else {
            continue;
        };
        let pad = 1 + n % 20;
        match name {
            b"ping" => {}
            b"message_stop" => {
                let mut stop: Value =
                    serde_json::from_slice(data).unwrap_or_else(|_| json!({"type": "message_stop"}));
                if let Some(obj) = stop.as_object_mut() {
                    obj.insert(
                        "amazon-bedrock-invocationMetrics".into(),
                        json!({
                            "inputTokenCount": tokens.input,
                            "outputTokenCount": tokens.output,
                            "invocationLatency": 1,
                            "firstByteLatency": 1,
                        }),
                    );
                }
                frames.push(chunk_message(&serde_json::to_vec(&stop).unwrap_or_default(), pad));
            }
            _ => frames.push(chunk_message(data, pad)),
        }
    }
    let mut response = Response::new(FakeBody::chunks(frames));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    headers.insert(
        "x-amzn-bedrock-content-type",
        HeaderValue::from_static("application/json"),
    );
    set_aws_request_id(&mut response, request_id);
    Outcome {
        response,
        usage: Some(usage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("us.anthropic.claude-sonnet-4-5-20250929-v1%3A0").as_deref(),
            Some("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
        );
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("a%zz"), None);
        assert_eq!(percent_decode("a%+1"), None);
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
    }

    #[test]
    fn sse_events_split() {
        assert_eq!(
            split_sse(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"),
            Some((&b"ping"[..], &b"{\"type\":\"ping\"}"[..]))
        );
        assert_eq!(split_sse(b"garbage"), None);
        assert_eq!(split_sse(b"event: x"), None);
    }

    #[test]
    fn event_messages_have_valid_crcs() {
        let m = event_message(&[(":event-type", "chunk")], b"{}");
        let total = u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize;
        assert_eq!(total, m.len());
        assert_eq!(crc32fast::hash(&m[..8]).to_be_bytes(), [m[8], m[9], m[10], m[11]]);
        assert_eq!(crc32fast::hash(&m[..total - 4]).to_be_bytes(), m[total - 4..]);
    }
}
