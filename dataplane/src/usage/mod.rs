//! Token usage read on the side of a proxied Anthropic Messages response.
//!
//! The proxy never buffers a response to learn its usage: [`SseUsageTap`] is fed
//! the streamed body chunk by chunk as it is relayed, and [`usage_from_json`]
//! reads a non-streaming body once it is complete. Both produce a [`Usage`]
//! split by billing class, which [`crate::pricing`] turns into a cost. A response that
//! ends without its final usage is charged by [`delivered::charged_usage`].

pub mod delivered;
mod json;
mod sse;

pub use delivered::{Delivered, RequestSize, charged_usage};
pub use json::usage_from_json;
pub use sse::{MAX_EVENT_BYTES, SseUsageTap, StreamError};

use serde::{Deserialize, Deserializer};

/// A streamed response's usage reader, one per wire format (Anthropic SSE, OpenAI Responses
/// and Chat Completions SSE, Gemini SSE). It is fed the body chunk by chunk as it is relayed
/// (never buffering more than one event) and reports what it read.
pub trait StreamTap: Send {
    /// Feeds the next chunk of the body.
    fn feed(&mut self, chunk: &[u8]);
    /// Usage read so far; `None` before any event carried some.
    fn usage(&self) -> Option<Usage>;
    /// Whether the stream reached its final event (e.g. `message_stop`,
    /// `response.completed`, `data: [DONE]` after the usage chunk, a candidate with a
    /// `finishReason`).
    fn completed(&self) -> bool;
    /// The error the stream reported (an `error` event), if any.
    fn stream_error(&self) -> Option<String>;
    /// Bytes of model content delivered (text, tool arguments, reasoning): what a stream cut
    /// before its final usage is charged by ([`delivered::charged_usage`]).
    fn content_bytes(&self) -> u64;
    /// Whether the provider's final usage was read (not an early estimate).
    fn final_usage(&self) -> bool;
}

/// Token counts by billing class for one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Uncached input tokens only (`usage.input_tokens`).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// 5-minute cache writes: `cache_creation.ephemeral_5m_input_tokens`, or
    /// `cache_creation_input_tokens` when the API gives no TTL split.
    pub cache_write_5m_tokens: u64,
    /// 1-hour cache writes: `cache_creation.ephemeral_1h_input_tokens`.
    pub cache_write_1h_tokens: u64,
    /// `cache_read_input_tokens`.
    pub cache_read_tokens: u64,
    /// `server_tool_use.web_search_requests`.
    pub web_search_requests: u64,
}

impl Usage {
    /// Every token of the prompt: uncached input, both cache writes and cache reads.
    /// This is what prompt-length price tiers are measured against.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_write_5m_tokens)
            .saturating_add(self.cache_write_1h_tokens)
            .saturating_add(self.cache_read_tokens)
    }

    /// Prompt plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens().saturating_add(self.output_tokens)
    }
}

/// A `usage` object as the API sends it. Every field may be absent or null, and
/// an absent or null field must not override what an earlier event said.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct WireUsage {
    #[serde(deserialize_with = "lenient_count")]
    input_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    output_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    cache_read_input_tokens: Option<u64>,
    cache_creation: Option<WireCacheCreation>,
    server_tool_use: Option<WireServerToolUse>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
struct WireCacheCreation {
    #[serde(deserialize_with = "lenient_count")]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(deserialize_with = "lenient_count")]
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
struct WireServerToolUse {
    #[serde(deserialize_with = "lenient_count")]
    web_search_requests: Option<u64>,
}

/// Usage assembled from one or more `usage` objects, field by field: a later
/// non-null field replaces an earlier one (the API's counts are cumulative, so
/// they are never summed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UsageAccumulator {
    input: Option<u64>,
    output: Option<u64>,
    cache_creation_total: Option<u64>,
    write_5m: Option<u64>,
    write_1h: Option<u64>,
    cache_read: Option<u64>,
    web_search: Option<u64>,
}

impl UsageAccumulator {
    pub(crate) fn overlay(&mut self, wire: &WireUsage) {
        fn set(slot: &mut Option<u64>, value: Option<u64>) {
            if value.is_some() {
                *slot = value;
            }
        }
        set(&mut self.input, wire.input_tokens);
        set(&mut self.output, wire.output_tokens);
        set(&mut self.cache_creation_total, wire.cache_creation_input_tokens);
        set(&mut self.cache_read, wire.cache_read_input_tokens);
        if let Some(split) = &wire.cache_creation {
            set(&mut self.write_5m, split.ephemeral_5m_input_tokens);
            set(&mut self.write_1h, split.ephemeral_1h_input_tokens);
        }
        if let Some(tools) = &wire.server_tool_use {
            set(&mut self.web_search, tools.web_search_requests);
        }
    }

    /// The TTL split is authoritative. If `cache_creation_input_tokens` is larger
    /// than the split's sum (no split given, or a later event updated only the
    /// total), the excess is billed as 5-minute writes, the API's default TTL, so
    /// cache writes are never under-counted.
    pub(crate) fn usage(&self) -> Usage {
        let write_1h = self.write_1h.unwrap_or(0);
        let split_5m = self.write_5m.unwrap_or(0);
        let write_5m = match self.cache_creation_total {
            Some(total) => split_5m.max(total.saturating_sub(write_1h)),
            None => split_5m,
        };
        Usage {
            input_tokens: self.input.unwrap_or(0),
            output_tokens: self.output.unwrap_or(0),
            cache_write_5m_tokens: write_5m,
            cache_write_1h_tokens: write_1h,
            cache_read_tokens: self.cache_read.unwrap_or(0),
            web_search_requests: self.web_search.unwrap_or(0),
        }
    }
}

/// A token count: a non-negative integer. Anything else (null, a float, a string,
/// a nested value) reads as absent rather than failing the whole event, so one
/// odd field cannot hide the rest of the usage.
fn lenient_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct CountVisitor;

    impl<'de> serde::de::Visitor<'de> for CountVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a token count")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }

    deserializer.deserialize_any(CountVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> WireUsage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn prompt_and_total_tokens() {
        let u = Usage {
            input_tokens: 10,
            output_tokens: 7,
            cache_write_5m_tokens: 100,
            cache_write_1h_tokens: 1000,
            cache_read_tokens: 10000,
            web_search_requests: 3,
        };
        assert_eq!(u.prompt_tokens(), 11110);
        assert_eq!(u.total_tokens(), 11117);
        let huge = Usage {
            input_tokens: u64::MAX,
            output_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(huge.total_tokens(), u64::MAX);
    }

    #[test]
    fn split_is_used_when_present() {
        let mut acc = UsageAccumulator::default();
        acc.overlay(&wire(
            r#"{"input_tokens":5,"cache_creation_input_tokens":300,
                "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}"#,
        ));
        let u = acc.usage();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (100, 200));
    }

    #[test]
    fn total_without_split_is_5m() {
        let mut acc = UsageAccumulator::default();
        acc.overlay(&wire(r#"{"cache_creation_input_tokens":300}"#));
        let u = acc.usage();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (300, 0));
    }

    #[test]
    fn total_updated_without_split_is_not_double_counted() {
        let mut acc = UsageAccumulator::default();
        acc.overlay(&wire(
            r#"{"cache_creation_input_tokens":300,
                "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}"#,
        ));
        // Same total again, no split: nothing changes.
        acc.overlay(&wire(r#"{"cache_creation_input_tokens":300}"#));
        let u = acc.usage();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (100, 200));
        // A larger total: the excess is 5-minute writes.
        acc.overlay(&wire(r#"{"cache_creation_input_tokens":350}"#));
        let u = acc.usage();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (150, 200));
    }

    #[test]
    fn odd_values_read_as_absent() {
        let w = wire(
            r#"{"input_tokens":-3,"output_tokens":1.5,"cache_read_input_tokens":"12",
                "cache_creation_input_tokens":{"x":[1,2]},"server_tool_use":{"web_search_requests":[1]},
                "cache_creation":{"ephemeral_5m_input_tokens":true,"ephemeral_1h_input_tokens":null}}"#,
        );
        let mut acc = UsageAccumulator::default();
        acc.overlay(&wire(
            r#"{"input_tokens":1,"output_tokens":2,"cache_read_input_tokens":3}"#,
        ));
        acc.overlay(&w);
        assert_eq!(
            acc.usage(),
            Usage {
                input_tokens: 1,
                output_tokens: 2,
                cache_read_tokens: 3,
                ..Usage::default()
            }
        );
    }
}
