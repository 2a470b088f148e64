//! Usage from a complete, non-streaming Messages response body.

use std::borrow::Cow;

use serde::Deserialize;

use super::{Usage, UsageAccumulator, WireUsage};

/// The fields of a Messages response that matter for billing; serde skips the
/// content without building it.
#[derive(Deserialize)]
struct MessageBody<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Usage and model from a non-streaming JSON Messages response body, or `None`
/// when the body is not one (an error body, another JSON shape, not JSON).
///
/// A body without `"type"` is accepted if it has a `usage` object, since some
/// provider wrappers drop the type; a body with any type but `"message"` is not.
pub fn usage_from_json(body: &[u8]) -> Option<(Usage, Option<String>)> {
    let message: MessageBody<'_> = serde_json::from_slice(body).ok()?;
    if message.kind.as_deref().is_some_and(|kind| kind != "message") {
        return None;
    }
    let mut acc = UsageAccumulator::default();
    acc.overlay(&message.usage?);
    Some((acc.usage(), message.model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_message_with_cache_split_and_tools() {
        let body = br#"{
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "text", "text": "usage: {\"input_tokens\": 99999} \u00e9\u65e5"},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"usage": {"output_tokens": 5}}}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 2095,
                "cache_creation_input_tokens": 2051,
                "cache_read_input_tokens": 10000,
                "cache_creation": {"ephemeral_5m_input_tokens": 51, "ephemeral_1h_input_tokens": 2000},
                "output_tokens": 503,
                "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
                "service_tier": "standard",
                "inference_geo": "us"
            }
        }"#;
        let (usage, model) = usage_from_json(body).unwrap();
        assert_eq!(model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(
            usage,
            Usage {
                input_tokens: 2095,
                output_tokens: 503,
                cache_write_5m_tokens: 51,
                cache_write_1h_tokens: 2000,
                cache_read_tokens: 10000,
                web_search_requests: 2,
            }
        );
    }

    #[test]
    fn cache_creation_without_split_is_5m() {
        let body = br#"{"type":"message","model":"m","usage":{"input_tokens":3,"output_tokens":4,
            "cache_creation_input_tokens":500,"cache_read_input_tokens":null}}"#;
        let (usage, model) = usage_from_json(body).unwrap();
        assert_eq!(model.as_deref(), Some("m"));
        assert_eq!(
            usage,
            Usage {
                input_tokens: 3,
                output_tokens: 4,
                cache_write_5m_tokens: 500,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn missing_type_with_usage_is_accepted() {
        let (usage, model) = usage_from_json(br#"{"usage":{"input_tokens":1,"output_tokens":2}}"#).unwrap();
        assert_eq!(model, None);
        assert_eq!(usage.total_tokens(), 3);
    }

    #[test]
    fn non_messages_are_none() {
        let not_messages: [&[u8]; 9] = [
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
            br#"{"type":"message","model":"m"}"#,
            br#"{"type":"message","usage":null}"#,
            br#"{"input_tokens": 12}"#,
            br#"[1,2,3]"#,
            b"",
            b"event: message_start\ndata: {}\n\n",
            b"\xff\xfe{",
            br#"{"type":"message","usage":{"input_tokens":1}"#,
        ];
        for body in not_messages {
            assert_eq!(usage_from_json(body), None, "{}", String::from_utf8_lossy(body));
        }
    }
}
