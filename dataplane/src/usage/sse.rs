//! Incremental reader of an Anthropic Messages SSE stream.
//!
//! The tap sees every byte the proxy relays, so the hot path is kept cheap. Framing is the
//! crate's one SSE framer ([`crate::sse::Framer`]): lines are found a word at a time and
//! lines complete within a chunk are read in place. The data of events the tap does not read
//! (`content_block_start`, `content_block_stop`, `ping`, unknown names) is declined, so it is
//! neither copied nor parsed however large. `message_start`, `message_delta` and `error`
//! data is buffered and JSON-parsed (a handful per response); `content_block_delta` data is
//! buffered and its payload string measured without being decoded (its `text`,
//! `partial_json` or `thinking` as raw JSON), so a stream cut before its final usage can
//! still be charged for what it delivered (see [`super::delivered`]).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Usage, UsageAccumulator, WireUsage};
use crate::sse::{Data, Event, Framer, Handler};

/// Most data (plus pending line) the tap will hold for one event it reads; a larger event
/// counts as malformed.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// An `event: error` received in the stream, typically after a 200 response
/// (e.g. `overloaded_error`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamError {
    /// `error.type`, e.g. `overloaded_error`; empty if the event had none.
    pub error_type: String,
    /// `error.message`; empty if the event had none.
    pub message: String,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// The event type, decided by the `event:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    /// No `event:` line (or `event: message`, the SSE default): the type is read
    /// from the data.
    Unnamed,
    MessageStart,
    MessageDelta,
    MessageStop,
    Error,
    /// `content_block_delta`: only the length of its payload string is read.
    ContentDelta,
    /// Anything else, including `content_block_start`/`_stop`, `ping` and a name too long
    /// to be any: data ignored.
    Other,
}

impl EventKind {
    fn from_name(name: Option<&[u8]>) -> Self {
        match name {
            Some(b"" | b"message") => Self::Unnamed,
            Some(b"message_start") => Self::MessageStart,
            Some(b"message_delta") => Self::MessageDelta,
            Some(b"message_stop") => Self::MessageStop,
            Some(b"error") => Self::Error,
            Some(b"content_block_delta") => Self::ContentDelta,
            _ => Self::Other,
        }
    }

    fn wants_data(self) -> bool {
        matches!(
            self,
            Self::Unnamed | Self::MessageStart | Self::MessageDelta | Self::Error | Self::ContentDelta
        )
    }
}

/// Incremental SSE reader for an Anthropic Messages stream.
///
/// Feed it the response body exactly as it comes off the wire: chunks may split
/// anywhere, including inside `\r\n`, a UTF-8 character, a field name or the
/// JSON. It never panics, and it holds at most [`MAX_EVENT_BYTES`] of one event.
///
/// Events are dispatched per the SSE rules: a blank line ends an event, and an
/// event without any `data:` line is dropped; an event left unterminated when
/// the stream stops is not dispatched.
#[derive(Debug)]
pub struct SseUsageTap {
    framer: Framer,
    read: Read,
}

/// What the tap has read so far.
#[derive(Debug, Default)]
struct Read {
    usage: UsageAccumulator,
    model: Option<String>,
    stop_reason: Option<String>,
    completed: bool,
    error: Option<StreamError>,
    events_seen: u64,
    malformed_events: u64,
    /// Bytes of content delivered in `content_block_delta` payloads.
    content_bytes: u64,
    /// Whether a `message_delta` carried the final `output_tokens`.
    final_usage: bool,
}

impl super::StreamTap for SseUsageTap {
    fn feed(&mut self, chunk: &[u8]) {
        SseUsageTap::feed(self, chunk);
    }

    fn usage(&self) -> Option<Usage> {
        (self.events_seen() > 0).then(|| SseUsageTap::usage(self))
    }

    fn completed(&self) -> bool {
        SseUsageTap::completed(self)
    }

    fn stream_error(&self) -> Option<String> {
        SseUsageTap::stream_error(self).map(|e| format!("{e:?}"))
    }

    fn content_bytes(&self) -> u64 {
        SseUsageTap::content_bytes(self)
    }

    fn final_usage(&self) -> bool {
        SseUsageTap::final_usage(self)
    }
}

impl Default for SseUsageTap {
    fn default() -> Self {
        Self::new()
    }
}

impl SseUsageTap {
    pub fn new() -> Self {
        Self {
            framer: Framer::new(MAX_EVENT_BYTES),
            read: Read::default(),
        }
    }

    /// Reads the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.framer.feed(chunk, &mut self.read);
    }

    /// `message_start.message.usage`, overlaid in order with every non-null field
    /// of each `message_delta.usage` (the API's counts are cumulative, so the
    /// last value of each field wins; they are never summed).
    pub fn usage(&self) -> Usage {
        self.read.usage.usage()
    }

    /// `message_start.message.model`.
    pub fn model(&self) -> Option<&str> {
        self.read.model.as_deref()
    }

    /// The last non-null `stop_reason` (from `message_delta.delta`).
    pub fn stop_reason(&self) -> Option<&str> {
        self.read.stop_reason.as_deref()
    }

    /// Whether `message_stop` was seen.
    pub fn completed(&self) -> bool {
        self.read.completed
    }

    /// The last `event: error` in the stream, if any.
    pub fn stream_error(&self) -> Option<&StreamError> {
        self.read.error.as_ref()
    }

    /// Events dispatched (of every type, including pings).
    pub fn events_seen(&self) -> u64 {
        self.read.events_seen
    }

    /// Events the tap needed but could not read: unparseable JSON, data over
    /// [`MAX_EVENT_BYTES`], or data declined under one name and dispatched under a name
    /// the tap reads (an `event:` line after the `data:` lines).
    pub fn malformed_events(&self) -> u64 {
        self.read.malformed_events
    }

    /// Bytes of content the stream delivered so far: the raw JSON string (escapes included,
    /// quotes not) of every `text_delta.text`, `input_json_delta.partial_json` and
    /// `thinking_delta.thinking`; a delta that cannot be read counts whole.
    pub fn content_bytes(&self) -> u64 {
        self.read.content_bytes
    }

    /// Whether a `message_delta` carried `output_tokens`: the stream's final usage
    /// was seen (it may still have ended without `message_stop`).
    pub fn final_usage(&self) -> bool {
        self.read.final_usage
    }
}

impl Handler for Read {
    fn wants_data(&mut self, name: Option<&[u8]>) -> bool {
        EventKind::from_name(name).wants_data()
    }

    fn on_event(&mut self, event: Option<Event<'_>>, _end: usize) {
        let Some(event) = event else { return };
        self.events_seen += 1;
        let kind = EventKind::from_name(event.name);
        match event.data {
            Data::Kept(data) => self.on_event(kind, data),
            Data::TooLarge => {
                self.malformed_events += 1;
                if kind == EventKind::ContentDelta {
                    // Too big to hold, but delivered: at least this much.
                    self.content_bytes += MAX_EVENT_BYTES as u64;
                }
            }
            Data::Skipped if kind.wants_data() => self.malformed_events += 1,
            // `message_stop` and the rest: their data was declined, their name is enough.
            Data::Skipped => self.on_event(kind, &[]),
        }
    }
}

impl Read {
    fn on_event(&mut self, kind: EventKind, data: &[u8]) {
        let parsed = match kind {
            EventKind::Other => Ok(()),
            EventKind::MessageStop => {
                self.completed = true;
                Ok(())
            }
            EventKind::MessageStart => self.on_message_start(data),
            EventKind::MessageDelta => self.on_message_delta(data),
            EventKind::Error => self.on_error(data),
            EventKind::ContentDelta => self.on_content_delta(data),
            EventKind::Unnamed => self.on_unnamed(data),
        };
        if parsed.is_err() {
            self.malformed_events += 1;
        }
    }

    fn on_message_start(&mut self, data: &[u8]) -> serde_json::Result<()> {
        let event: MessageStartEvent = serde_json::from_slice(data)?;
        if let Some(message) = event.message {
            if message.model.is_some() {
                self.model = message.model;
            }
            if message.stop_reason.is_some() {
                self.stop_reason = message.stop_reason;
            }
            if let Some(usage) = &message.usage {
                self.usage.overlay(usage);
            }
        }
        Ok(())
    }

    fn on_message_delta(&mut self, data: &[u8]) -> serde_json::Result<()> {
        let event: MessageDeltaEvent = serde_json::from_slice(data)?;
        if let Some(stop_reason) = event.delta.and_then(|d| d.stop_reason) {
            self.stop_reason = Some(stop_reason);
        }
        if let Some(usage) = &event.usage {
            self.final_usage |= usage.output_tokens.is_some();
            self.usage.overlay(usage);
        }
        Ok(())
    }

    /// Measures a delta's payload; a delta that cannot be read counts whole (it was
    /// delivered all the same).
    fn on_content_delta(&mut self, data: &[u8]) -> serde_json::Result<()> {
        let bytes = match serde_json::from_slice::<ContentDeltaEvent<'_>>(data) {
            Ok(event) => event.delta.map_or(0, |d| d.payload_len()),
            Err(e) => {
                self.content_bytes += data.len() as u64;
                return Err(e);
            }
        };
        self.content_bytes += bytes;
        Ok(())
    }

    fn on_error(&mut self, data: &[u8]) -> serde_json::Result<()> {
        let event: ErrorEvent = serde_json::from_slice(data)?;
        let body = event.error.unwrap_or_default();
        self.error = Some(StreamError {
            error_type: body.error_type.unwrap_or_default(),
            message: body.message.unwrap_or_default(),
        });
        Ok(())
    }

    /// An event without an `event:` line. Anthropic always names its events, so
    /// this is a fallback: a substring check keeps content deltas (whose text is
    /// JSON-escaped, so cannot contain these quoted names) from being parsed.
    fn on_unnamed(&mut self, data: &[u8]) -> serde_json::Result<()> {
        const NAMES: [&[u8]; 5] = [
            b"\"message_start\"",
            b"\"message_delta\"",
            b"\"message_stop\"",
            b"\"error\"",
            b"\"content_block_delta\"",
        ];
        if !NAMES.iter().any(|name| contains(data, name)) {
            return Ok(());
        }
        let tagged: TypeOnly<'_> = serde_json::from_slice(data)?;
        let kind = EventKind::from_name(Some(tagged.kind.as_deref().unwrap_or("").as_bytes()));
        match kind {
            // No type, or `"type":"message"`: not an event we read.
            EventKind::Unnamed | EventKind::Other => Ok(()),
            kind => {
                self.on_event(kind, data);
                Ok(())
            }
        }
    }
}

#[derive(Deserialize)]
struct MessageStartEvent {
    #[serde(default)]
    message: Option<StartMessage>,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct MessageDeltaEvent {
    #[serde(default)]
    delta: Option<DeltaBody>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct DeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ContentDeltaEvent<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaPayload<'a>>,
}

/// The payload of a content delta, kept raw: only its length matters.
#[derive(Deserialize)]
struct DeltaPayload<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    partial_json: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
}

impl DeltaPayload<'_> {
    /// Bytes of the payload strings as sent (escapes included, quotes not).
    fn payload_len(&self) -> u64 {
        [self.text, self.partial_json, self.thinking]
            .into_iter()
            .flatten()
            .map(|raw| {
                let s = raw.get();
                if s.starts_with('"') {
                    s.len().saturating_sub(2) as u64
                } else {
                    0
                }
            })
            .sum()
    }
}

#[derive(Deserialize)]
struct ErrorEvent {
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    error_type: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the framer keeps allocated between large events.
    const RETAINED: usize = 64 << 10;

    /// Everything observable about a tap, for comparing feeds.
    #[derive(Debug, PartialEq, Eq)]
    struct Summary {
        usage: Usage,
        model: Option<String>,
        stop_reason: Option<String>,
        completed: bool,
        error: Option<StreamError>,
        events_seen: u64,
        malformed_events: u64,
        content_bytes: u64,
        final_usage: bool,
    }

    fn summary(tap: &SseUsageTap) -> Summary {
        Summary {
            usage: tap.usage(),
            model: tap.model().map(str::to_owned),
            stop_reason: tap.stop_reason().map(str::to_owned),
            completed: tap.completed(),
            error: tap.stream_error().cloned(),
            events_seen: tap.events_seen(),
            malformed_events: tap.malformed_events(),
            content_bytes: tap.content_bytes(),
            final_usage: tap.final_usage(),
        }
    }

    fn feed_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Summary {
        let mut tap = SseUsageTap::new();
        for chunk in chunks {
            tap.feed(chunk);
        }
        summary(&tap)
    }

    fn whole(stream: &[u8]) -> Summary {
        feed_chunks([stream])
    }

    /// Asserts that splitting the stream at every byte position, and feeding it
    /// one byte at a time, reads exactly what feeding it whole reads.
    fn assert_split_invariant(stream: &[u8]) -> Summary {
        let expected = whole(stream);
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(feed_chunks([a, b]), expected, "split at byte {at}");
        }
        assert_eq!(feed_chunks(stream.chunks(1)), expected, "1-byte chunks");
        // Empty chunks in between change nothing.
        let mut tap = SseUsageTap::new();
        for chunk in stream.chunks(7) {
            tap.feed(&[]);
            tap.feed(chunk);
        }
        assert_eq!(summary(&tap), expected, "7-byte chunks with empty chunks");
        expected
    }

    fn crlf(stream: &str) -> String {
        stream.replace('\n', "\r\n")
    }

    fn cr(stream: &str) -> String {
        stream.replace('\n', "\r")
    }

    /// [`assert_split_invariant`] for the stream with LF, CRLF and CR line
    /// endings, which must all read the same.
    fn assert_every_line_ending(stream: &str) -> Summary {
        let expected = assert_split_invariant(stream.as_bytes());
        assert_eq!(assert_split_invariant(crlf(stream).as_bytes()), expected, "CRLF");
        assert_eq!(assert_split_invariant(cr(stream).as_bytes()), expected, "CR");
        expected
    }

    const FULL: &str = include_str!("testdata/full.sse");
    const ERROR_AFTER_200: &str = include_str!("testdata/error_after_200.sse");

    fn full_expected() -> Summary {
        Summary {
            usage: Usage {
                input_tokens: 472,
                output_tokens: 689,
                cache_write_5m_tokens: 1000,
                cache_write_1h_tokens: 500,
                cache_read_tokens: 20000,
                web_search_requests: 1,
            },
            model: Some("claude-sonnet-4-5-20250929".into()),
            stop_reason: Some("tool_use".into()),
            completed: true,
            error: None,
            events_seen: 20,
            malformed_events: 0,
            // The thinking, text and tool-input payloads as sent (the signature is not content).
            content_bytes: 330,
            final_usage: true,
        }
    }

    #[test]
    fn full_stream() {
        assert_eq!(assert_split_invariant(FULL.as_bytes()), full_expected());
    }

    #[test]
    fn full_stream_crlf_and_cr() {
        assert_eq!(assert_split_invariant(crlf(FULL).as_bytes()), full_expected());
        assert_eq!(assert_split_invariant(cr(FULL).as_bytes()), full_expected());
    }

    #[test]
    fn full_stream_with_mixed_line_endings() {
        // Alternate the three terminators line by line, in an order where a CR
        // is never directly followed by an LF (that would be one CRLF).
        let mut mixed = String::new();
        for (i, line) in FULL.split('\n').enumerate() {
            if i > 0 {
                mixed.push_str(["\n", "\r", "\r\n"][i % 3]);
            }
            mixed.push_str(line);
        }
        assert_eq!(assert_split_invariant(mixed.as_bytes()), full_expected());
    }

    #[test]
    fn error_after_200() {
        let expected = Summary {
            usage: Usage {
                input_tokens: 2679,
                output_tokens: 3,
                cache_read_tokens: 1200,
                ..Usage::default()
            },
            model: Some("claude-opus-4-6".into()),
            stop_reason: None,
            completed: false,
            error: Some(StreamError {
                error_type: "overloaded_error".into(),
                message: "Overloaded".into(),
            }),
            events_seen: 6,
            malformed_events: 0,
            content_bytes: 10,
            final_usage: false,
        };
        assert_eq!(assert_split_invariant(ERROR_AFTER_200.as_bytes()), expected);
        assert_eq!(assert_split_invariant(crlf(ERROR_AFTER_200).as_bytes()), expected);
        assert_eq!(
            expected.error.unwrap().to_string(),
            "overloaded_error: Overloaded"
        );
    }

    #[test]
    fn stream_cut_midway_keeps_usage_so_far() {
        let cut_at = FULL.find("Paris").unwrap();
        let cut = &FULL.as_bytes()[..cut_at];
        let got = assert_split_invariant(cut);
        assert!(!got.completed);
        assert_eq!(got.stop_reason, None);
        assert_eq!(got.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(
            got.usage,
            Usage {
                input_tokens: 472,
                output_tokens: 2,
                cache_write_5m_tokens: 1000,
                cache_write_1h_tokens: 500,
                cache_read_tokens: 20000,
                web_search_requests: 0,
            }
        );
    }

    #[test]
    fn every_truncation_is_consistent() {
        // A stream cut anywhere never panics, is complete only once the
        // message_stop event is terminated, and never reports more events
        // than the whole stream.
        let stream = FULL.as_bytes();
        let stop_end = FULL.rfind("\n\n").unwrap() + 2;
        let full = whole(stream);
        for end in 0..=stream.len() {
            let got = whole(&stream[..end]);
            assert_eq!(got.completed, end >= stop_end, "cut at {end}");
            assert!(got.events_seen <= full.events_seen);
            assert_eq!(got.malformed_events, 0, "cut at {end}");
        }
    }

    #[test]
    fn message_delta_overrides_input_and_nulls_do_not() {
        let stream = "event: message_start\n\
            data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-opus-4-8\",\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":20,\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\n\
            event: message_delta\n\
            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":11,\"cache_creation_input_tokens\":null,\"cache_read_input_tokens\":null,\"output_tokens\":40,\"server_tool_use\":null}}\n\n\
            event: message_delta\n\
            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":45}}\n\n\
            event: message_stop\n\
            data: {\"type\":\"message_stop\"}\n\n";
        let got = assert_every_line_ending(stream);
        assert_eq!(
            got.usage,
            Usage {
                input_tokens: 11,
                output_tokens: 45,
                cache_write_5m_tokens: 20,
                cache_write_1h_tokens: 0,
                cache_read_tokens: 30,
                web_search_requests: 0,
            }
        );
        assert_eq!(got.stop_reason.as_deref(), Some("end_turn"));
        assert!(got.completed);
    }

    #[test]
    fn unnamed_events_fall_back_to_data_type() {
        // Strip every `event:` line: the reader must get the same answer from
        // the data's "type".
        let unnamed: String = FULL
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let got = assert_split_invariant(unnamed.as_bytes());
        assert_eq!(got, full_expected());
        // `event: message` is the SSE default type, so it reads the data too.
        let message = FULL.replace("event: message_delta", "event: message");
        assert_eq!(whole(message.as_bytes()), full_expected());
    }

    #[test]
    fn unnamed_content_mentioning_event_names_is_not_usage() {
        let stream = "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"{\\\"type\\\":\\\"message_delta\\\",\\\"usage\\\":{\\\"output_tokens\\\":999}}\"}}\n\n\
            data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
            data: {\"type\":\"ping\",\"note\":\"error\"}\n\n";
        let got = assert_every_line_ending(stream);
        assert_eq!(
            got.usage,
            Usage {
                input_tokens: 5,
                output_tokens: 1,
                ..Usage::default()
            }
        );
        assert_eq!(got.events_seen, 3);
        assert_eq!(got.malformed_events, 0);
    }

    #[test]
    fn sse_syntax_edge_cases() {
        // A BOM, comments, `data:` without the space, a value that keeps its
        // second space, JSON split over two data lines, a field without a colon,
        // id/retry fields, an unknown event and an event without data.
        let stream = "\u{feff}: keep-alive comment\n\
            :another\n\
            retry: 3000\n\
            id: 7\n\
            event: message_start\n\
            data:{\"type\":\"message_start\",\n\
            data:  \"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":8,\"output_tokens\":1}}}\n\
            \n\
            event: brand_new_event\n\
            data: {\"type\":\"brand_new_event\",\"usage\":{\"input_tokens\":1000000}}\n\
            \n\
            event: message_delta\n\
            \n\
            data\n\
            \n\
            event: message_delta\n\
            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":12}}\n\
            unknownfieldwithoutcolon\n\
            \n\
            event: message_stop\n\
            data: {\"type\":\"message_stop\"}\n\
            \n";
        let got = assert_every_line_ending(stream);
        assert_eq!(
            got,
            Summary {
                usage: Usage {
                    input_tokens: 8,
                    output_tokens: 12,
                    ..Usage::default()
                },
                model: Some("claude-haiku-4-5".into()),
                stop_reason: Some("max_tokens".into()),
                completed: true,
                error: None,
                // message_start, brand_new_event, the bare `data` line, message_delta, message_stop
                events_seen: 5,
                malformed_events: 0,
                content_bytes: 0,
                final_usage: true,
            }
        );
    }

    #[test]
    fn partial_bom_is_not_stripped() {
        // Bytes that start like a BOM but are not one make the first line garbage.
        let stream = b"\xEF\xBBevent: message_stop\ndata: {}\n\nevent: message_stop\ndata: {}\n\n";
        let got = assert_split_invariant(stream);
        assert_eq!(got.events_seen, 2);
        assert!(got.completed);
        let only_garbage = b"\xEFevent: message_stop\ndata: {}\n\n";
        let got = assert_split_invariant(only_garbage);
        assert_eq!(got.events_seen, 1);
        assert!(!got.completed);
    }

    #[test]
    fn malformed_needed_events_are_counted_and_skipped() {
        let stream = "event: message_start\n\
            data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":\n\n\
            event: message_delta\n\
            data: {\"usage\":{\"output_tokens\":3}}\n\n\
            event: error\n\
            data: not json\n\n\
            event: content_block_delta\n\
            data: not json either, but delivered\n\n";
        let got = assert_every_line_ending(stream);
        assert_eq!(
            got.usage,
            Usage {
                output_tokens: 3,
                ..Usage::default()
            }
        );
        assert_eq!(got.events_seen, 4);
        assert_eq!(got.malformed_events, 3);
        assert_eq!(got.error, None);
        assert_eq!(
            got.content_bytes,
            "not json either, but delivered".len() as u64,
            "an unreadable delta counts whole"
        );
    }

    #[test]
    fn error_event_without_fields() {
        let got = whole(b"event: error\ndata: {\"type\":\"error\"}\n\n");
        assert_eq!(
            got.error,
            Some(StreamError {
                error_type: String::new(),
                message: String::new()
            })
        );
    }

    #[test]
    fn huge_skipped_data_is_not_buffered() {
        // A 3 MiB content_block_start line arrives in 64 KiB chunks: it is
        // skipped without being held, and the stream reads on.
        let mut tap = SseUsageTap::new();
        tap.feed(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"content_block\":{\"text\":\"",
        );
        let filler = vec![b'a'; 64 << 10];
        for _ in 0..48 {
            tap.feed(&filler);
            let held = tap.framer.held_capacity();
            assert!(held <= 64, "held {held}");
        }
        tap.feed(b"\"}}\n\nevent: message_delta\ndata: {\"usage\":{\"output_tokens\":9}}\n\n");
        assert_eq!(tap.usage().output_tokens, 9);
        assert_eq!(tap.events_seen(), 2);
        assert_eq!(tap.malformed_events(), 0);
    }

    #[test]
    fn content_deltas_are_measured_and_a_huge_one_counts_at_least_its_cap() {
        let stream = "event: content_block_delta\n\
            data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"caf\u{e9} \\\"ok\\\"\"}}\n\n\
            event: content_block_delta\n\
            data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"AAAA\"}}\n\n";
        let got = assert_every_line_ending(stream);
        // `café \"ok\"` as sent: 5 + 1 + 6 bytes; a signature is not content.
        assert_eq!(got.content_bytes, 12);
        assert!(!got.final_usage);

        // A 3 MiB delta arrives in 64 KiB chunks: held only up to the cap, then
        // dropped; it counts as the cap, and the stream reads on.
        let mut tap = SseUsageTap::new();
        tap.feed(b"event: content_block_delta\ndata: {\"delta\":{\"text\":\"");
        let filler = vec![b'a'; 64 << 10];
        for _ in 0..48 {
            tap.feed(&filler);
            let held = tap.framer.held_capacity();
            assert!(held <= 2 * MAX_EVENT_BYTES + 1024, "held {held}");
        }
        tap.feed(b"\"}}\n\nevent: message_delta\ndata: {\"usage\":{\"output_tokens\":9}}\n\n");
        assert_eq!(tap.usage().output_tokens, 9);
        assert!(tap.final_usage());
        assert_eq!(tap.malformed_events(), 1);
        assert_eq!(tap.content_bytes(), MAX_EVENT_BYTES as u64);
        assert!(tap.framer.held_capacity() <= 3 * RETAINED);
    }

    #[test]
    fn oversized_needed_event_is_malformed_and_memory_is_released() {
        let big = "x".repeat(MAX_EVENT_BYTES + 10);
        let start = format!(
            "event: message_start\ndata: {{\"message\":{{\"usage\":{{\"input_tokens\":1}},\"pad\":\"{big}\"}}}}\n\n"
        );
        let tail = "event: message_delta\ndata: {\"usage\":{\"output_tokens\":4}}\n\nevent: message_stop\ndata: {}\n\n";
        for chunk_len in [start.len() + tail.len(), 4096, 1000] {
            let mut tap = SseUsageTap::new();
            let stream = format!("{start}{tail}");
            for chunk in stream.as_bytes().chunks(chunk_len) {
                tap.feed(chunk);
                assert!(tap.framer.held_capacity() <= 2 * MAX_EVENT_BYTES + 1024);
            }
            assert_eq!(tap.malformed_events(), 1, "chunk {chunk_len}");
            assert_eq!(
                tap.usage(),
                Usage {
                    output_tokens: 4,
                    ..Usage::default()
                }
            );
            assert!(tap.completed());
            assert!(tap.framer.held_capacity() <= 3 * RETAINED);
        }
        // Many data lines, each under the line cap, overflowing the event cap.
        let line = format!("data: {}\n", "y".repeat(1000));
        let mut tap = SseUsageTap::new();
        tap.feed(b"event: message_delta\n");
        for _ in 0..(MAX_EVENT_BYTES / 1000 + 5) {
            tap.feed(line.as_bytes());
        }
        tap.feed(b"\nevent: message_stop\ndata: {}\n\n");
        assert_eq!(tap.malformed_events(), 1);
        assert!(tap.completed());
    }

    #[test]
    fn oversized_event_name_is_ignored() {
        let mut tap = SseUsageTap::new();
        tap.feed(b"event: message_delta");
        for _ in 0..20 {
            tap.feed(&[b'z'; 64 << 10]);
        }
        tap.feed(b"\ndata: {\"usage\":{\"output_tokens\":4}}\n\n");
        assert_eq!(tap.usage(), Usage::default());
        assert_eq!(tap.events_seen(), 1);
    }

    /// A small deterministic pseudo-random generator (64-bit LCG).
    struct Lcg(u64);

    impl Lcg {
        fn next_u64(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn byte_soup_never_panics_and_chunking_never_matters() {
        const PIECES: [&[u8]; 22] = [
            b"event: ",
            b"event:message_start",
            b"event: message_delta",
            b"event: message_stop",
            b"event: error",
            b"event: content_block_delta",
            b"data: ",
            b"data:",
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            b":",
            b"{\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":3}}}",
            b"{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5,\"input_tokens\":null}}",
            b"{\"type\":\"error\",\"error\":{\"type\":\"x\",\"message\":\"y\"}}",
            b"{\"usage\":{\"cache_creation\":{\"ephemeral_1h_input_tokens\":7}}}",
            b"{\"type\":\"message_stop\"}",
            b"\xEF\xBB\xBF",
            "日本🎉".as_bytes(),
            b"\xff\xfe\x00",
            b"}}}{{[\"",
        ];
        let mut rng = Lcg(0x5eed);
        for round in 0..400 {
            let mut soup = Vec::new();
            for _ in 0..(rng.next_u64() % 60) {
                if rng.next_u64() % 4 == 0 {
                    soup.push(rng.next_u64() as u8);
                } else {
                    soup.extend_from_slice(PIECES[(rng.next_u64() as usize) % PIECES.len()]);
                }
            }
            let expected = whole(&soup);
            // A few random chunkings per soup, plus 1-byte chunks.
            for _ in 0..4 {
                let mut tap = SseUsageTap::new();
                let mut rest = &soup[..];
                while !rest.is_empty() {
                    let n = 1 + (rng.next_u64() as usize) % rest.len().min(17);
                    tap.feed(&rest[..n]);
                    rest = &rest[n..];
                }
                assert_eq!(
                    summary(&tap),
                    expected,
                    "round {round}: {}",
                    String::from_utf8_lossy(&soup)
                );
            }
            assert_eq!(feed_chunks(soup.chunks(1)), expected, "round {round}");
        }
    }

    #[test]
    fn pure_random_bytes_never_panic() {
        let mut rng = Lcg(42);
        for _ in 0..200 {
            let mut tap = SseUsageTap::new();
            for _ in 0..(rng.next_u64() % 20) {
                let chunk: Vec<u8> = (0..(rng.next_u64() % 300))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                tap.feed(&chunk);
            }
            let _ = summary(&tap);
        }
    }
}
