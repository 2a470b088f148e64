//! Token usage of a Gemini answer, in the crate's billing classes.
//!
//! **Mapping** (`usageMetadata`, <https://ai.google.dev/api/generate-content#UsageMetadata>):
//! `promptTokenCount` includes the cached tokens, and thinking is billed as output
//! (<https://ai.google.dev/gemini-api/docs/pricing>), so
//! - `input_tokens = promptTokenCount - cachedContentTokenCount + toolUsePromptTokenCount`
//!   (saturating; tool-use prompt tokens, e.g. the results of Google Search grounding, are
//!   billed as input),
//! - `cache_read_tokens = cachedContentTokenCount`,
//! - `output_tokens = candidatesTokenCount + thoughtsTokenCount`.
//!
//! Gemini has no cache-write tokens (explicit cache storage is billed by the hour, outside
//! any response) and reports no count of grounding queries, so those classes stay 0.
//!
//! **Streams** (`:streamGenerateContent?alt=sse`): each SSE `data:` is one
//! `GenerateContentResponse`, without event names. `usageMetadata` may come in several
//! chunks with cumulative counts: each field's last value wins (a field a later chunk omits
//! keeps its earlier value; proto3 JSON omits zeros, and the counts never fall). The stream
//! is complete once a candidate has a `finishReason` (or `promptFeedback.blockReason` says
//! the prompt was blocked) and usage was read; the usage is final when it came in that
//! chunk or a later one. A `data: {"error": {...}}` chunk is the stream's error. Content
//! bytes are the raw JSON of `candidates[].content.parts[].text` (escapes included, quotes
//! not; thought summaries are text parts too) and of `functionCall.args`.
//!
//! Framing is the crate's bounded SSE framer: at most [`MAX_EVENT_BYTES`] of one chunk is
//! held; a larger chunk counts as malformed and as that many content bytes. Nothing here
//! panics on any input (tested with random bytes at every split point).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::count;
use crate::sse::{Data, Event, Framer, Handler};
use crate::usage::{StreamTap, Usage};

pub use crate::usage::MAX_EVENT_BYTES;

/// `usageMetadata` as Google sends it; odd values read as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireUsage<'a> {
    #[serde(borrow)]
    prompt_token_count: Option<&'a RawValue>,
    #[serde(borrow)]
    cached_content_token_count: Option<&'a RawValue>,
    #[serde(borrow)]
    candidates_token_count: Option<&'a RawValue>,
    #[serde(borrow)]
    thoughts_token_count: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_use_prompt_token_count: Option<&'a RawValue>,
}

/// Usage assembled field by field from one or more `usageMetadata` objects.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Accumulator {
    prompt: Option<u64>,
    cached: Option<u64>,
    candidates: Option<u64>,
    thoughts: Option<u64>,
    tool_use: Option<u64>,
}

impl Accumulator {
    fn overlay(&mut self, wire: &WireUsage<'_>) {
        fn set(slot: &mut Option<u64>, raw: Option<&RawValue>) {
            if let Some(n) = raw.and_then(count) {
                *slot = Some(n);
            }
        }
        set(&mut self.prompt, wire.prompt_token_count);
        set(&mut self.cached, wire.cached_content_token_count);
        set(&mut self.candidates, wire.candidates_token_count);
        set(&mut self.thoughts, wire.thoughts_token_count);
        set(&mut self.tool_use, wire.tool_use_prompt_token_count);
    }

    fn usage(&self) -> Usage {
        let cached = self.cached.unwrap_or(0);
        Usage {
            input_tokens: self
                .prompt
                .unwrap_or(0)
                .saturating_sub(cached)
                .saturating_add(self.tool_use.unwrap_or(0)),
            output_tokens: self
                .candidates
                .unwrap_or(0)
                .saturating_add(self.thoughts.unwrap_or(0)),
            cache_read_tokens: cached,
            ..Usage::default()
        }
    }
}

/// One `GenerateContentResponse`, only what billing reads; serde skips the rest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(borrow, default)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(borrow, default)]
    usage_metadata: Option<WireUsage<'a>>,
    #[serde(borrow, default)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Option<Vec<Part<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<FunctionCall<'a>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(borrow, default)]
    block_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl Chunk<'_> {
    /// Whether a candidate finished or the prompt was blocked: nothing more is generated.
    fn finishes(&self) -> bool {
        let finished = self.candidates.iter().flatten().any(|c| {
            c.finish_reason
                .as_deref()
                .is_some_and(|r| !r.is_empty() && r != "FINISH_REASON_UNSPECIFIED")
        });
        let blocked = self
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
            .is_some_and(|r| !r.is_empty() && r != "BLOCK_REASON_UNSPECIFIED");
        finished || blocked
    }

    /// Content bytes delivered in this chunk (see the module docs).
    fn content_bytes(&self) -> u64 {
        let parts = self
            .candidates
            .iter()
            .flatten()
            .filter_map(|c| c.content.as_ref()?.parts.as_ref())
            .flatten();
        parts
            .map(|p| {
                let text = p.text.map_or(0, string_len);
                let args = p
                    .function_call
                    .as_ref()
                    .and_then(|f| f.args)
                    .map_or(0, |raw| raw.get().len() as u64);
                text + args
            })
            .sum()
    }
}

/// Bytes of a JSON string as sent (escapes included, quotes not); 0 for anything else.
fn string_len(raw: &RawValue) -> u64 {
    let s = raw.get();
    if s.starts_with('"') {
        s.len().saturating_sub(2) as u64
    } else {
        0
    }
}

/// Usage from a complete `generateContent` answer: one `GenerateContentResponse`, or a JSON
/// array of them (what `:streamGenerateContent` answers without `alt=sse`). `None` when the
/// body carries no `usageMetadata` (an error body, another shape, not JSON).
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    let mut acc = Accumulator::default();
    let mut seen = false;
    let mut read = |chunk: &Chunk<'_>| {
        if let Some(u) = &chunk.usage_metadata {
            acc.overlay(u);
            seen = true;
        }
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let chunks: Vec<Chunk<'_>> = serde_json::from_slice(body).ok()?;
        chunks.iter().for_each(&mut read);
    } else {
        read(&serde_json::from_slice::<Chunk<'_>>(body).ok()?);
    }
    seen.then(|| acc.usage())
}

/// `totalTokens` of a `:countTokens` answer (<https://ai.google.dev/api/tokens>); `None` when
/// the body has none (an error body, not JSON).
pub fn count_tokens_from_json(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Counted<'a> {
        #[serde(borrow, default)]
        total_tokens: Option<&'a RawValue>,
    }
    let counted: Counted<'_> = serde_json::from_slice(body).ok()?;
    counted.total_tokens.and_then(count)
}

/// Incremental reader of a Gemini SSE stream (see the module docs): feed it the body as it
/// comes off the wire, split anywhere.
#[derive(Debug)]
pub struct GeminiTap {
    framer: Framer,
    read: Read,
}

/// What the tap has read so far.
#[derive(Debug, Default)]
struct Read {
    usage: Accumulator,
    usage_seen: bool,
    finished: bool,
    final_usage: bool,
    finish_reason: Option<String>,
    model: Option<String>,
    error: Option<String>,
    content_bytes: u64,
    events_seen: u64,
    malformed_events: u64,
}

impl Default for GeminiTap {
    fn default() -> Self {
        Self::new()
    }
}

impl GeminiTap {
    /// A tap at the start of a stream.
    pub fn new() -> Self {
        Self {
            framer: Framer::new(MAX_EVENT_BYTES),
            read: Read::default(),
        }
    }

    /// The last non-empty `modelVersion` (e.g. `gemini-2.5-pro`).
    pub fn model(&self) -> Option<&str> {
        self.read.model.as_deref()
    }

    /// The first `finishReason` (or prompt `blockReason`) that ended the answer.
    pub fn finish_reason(&self) -> Option<&str> {
        self.read.finish_reason.as_deref()
    }

    /// Events dispatched.
    pub fn events_seen(&self) -> u64 {
        self.read.events_seen
    }

    /// Events that could not be read: not a JSON object of the expected shape, or larger
    /// than [`MAX_EVENT_BYTES`].
    pub fn malformed_events(&self) -> u64 {
        self.read.malformed_events
    }
}

impl StreamTap for GeminiTap {
    fn feed(&mut self, chunk: &[u8]) {
        self.framer.feed(chunk, &mut self.read);
    }

    fn usage(&self) -> Option<Usage> {
        self.read.usage_seen.then(|| self.read.usage.usage())
    }

    fn completed(&self) -> bool {
        self.read.finished && self.read.usage_seen
    }

    fn stream_error(&self) -> Option<String> {
        self.read.error.clone()
    }

    fn content_bytes(&self) -> u64 {
        self.read.content_bytes
    }

    fn final_usage(&self) -> bool {
        self.read.final_usage
    }
}

impl Handler for Read {
    fn on_event(&mut self, event: Option<Event<'_>>, _end: usize) {
        let Some(event) = event else { return };
        self.events_seen += 1;
        match event.data {
            Data::Kept(data) => self.on_chunk(data),
            Data::TooLarge => {
                self.malformed_events += 1;
                // Too big to hold, but delivered: at least this much.
                self.content_bytes += MAX_EVENT_BYTES as u64;
            }
            // Never declined (every chunk may carry usage).
            Data::Skipped => self.malformed_events += 1,
        }
    }
}

impl Read {
    fn on_chunk(&mut self, data: &[u8]) {
        let chunk: Chunk<'_> = match serde_json::from_slice(data) {
            Ok(chunk) => chunk,
            Err(_) => {
                self.malformed_events += 1;
                return;
            }
        };
        self.content_bytes += chunk.content_bytes();
        if let Some(model) = chunk.model_version.as_ref().filter(|m| !m.is_empty()) {
            self.model = Some(model.clone());
        }
        if chunk.finishes() && !self.finished {
            self.finished = true;
            self.finish_reason = chunk
                .candidates
                .iter()
                .flatten()
                .find_map(|c| c.finish_reason.as_deref().filter(|r| !r.is_empty()))
                .or_else(|| chunk.prompt_feedback.as_ref()?.block_reason.as_deref())
                .map(str::to_owned);
        }
        if let Some(usage) = &chunk.usage_metadata {
            self.usage.overlay(usage);
            self.usage_seen = true;
            self.final_usage |= self.finished;
        }
        if let Some(error) = chunk.error {
            let status = error.status.unwrap_or_default();
            let code = error.code.map(|c| c.to_string()).unwrap_or_default();
            self.error = Some(format!(
                "{} {}: {}",
                code,
                status,
                error.message.unwrap_or_default()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything observable about a tap, for comparing feeds.
    #[derive(Debug, PartialEq, Eq)]
    struct Summary {
        usage: Option<Usage>,
        completed: bool,
        final_usage: bool,
        error: Option<String>,
        content_bytes: u64,
        model: Option<String>,
        finish_reason: Option<String>,
        events_seen: u64,
        malformed_events: u64,
    }

    fn summary(tap: &GeminiTap) -> Summary {
        Summary {
            usage: tap.usage(),
            completed: tap.completed(),
            final_usage: tap.final_usage(),
            error: tap.stream_error(),
            content_bytes: tap.content_bytes(),
            model: tap.model().map(str::to_owned),
            finish_reason: tap.finish_reason().map(str::to_owned),
            events_seen: tap.events_seen(),
            malformed_events: tap.malformed_events(),
        }
    }

    fn feed_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Summary {
        let mut tap = GeminiTap::new();
        for c in chunks {
            tap.feed(c);
        }
        summary(&tap)
    }

    fn whole(stream: &[u8]) -> Summary {
        feed_chunks([stream])
    }

    /// The summary of `stream` fed whole, checked equal for every split into two chunks and
    /// for one byte at a time.
    fn every_split(stream: &[u8]) -> Summary {
        let expected = whole(stream);
        for i in 0..=stream.len() {
            assert_eq!(
                feed_chunks([&stream[..i], &stream[i..]]),
                expected,
                "split at {i}"
            );
        }
        assert_eq!(feed_chunks(stream.chunks(1)), expected, "byte by byte");
        expected
    }

    /// A stream as Gemini CLI gets it from `streamGenerateContent?alt=sse`: thought summary,
    /// text, a function call, then the finishing chunk with the final usage.
    const STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"**Planning**\",\"thought\": true}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 12000,\"cachedContentTokenCount\": 8000,\"totalTokenCount\": 12050,\"thoughtsTokenCount\": 50},\"modelVersion\": \"gemini-2.5-pro\",\"responseId\": \"r1\"}\r\n\r\n\
        data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"I'll read \\\"a.rs\\\".\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 12000,\"cachedContentTokenCount\": 8000,\"candidatesTokenCount\": 6,\"totalTokenCount\": 12100,\"thoughtsTokenCount\": 94},\"modelVersion\": \"gemini-2.5-pro\"}\r\n\r\n\
        data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"read_file\",\"args\": {\"absolute_path\": \"/a.rs\"}}}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 12000,\"cachedContentTokenCount\": 8000,\"candidatesTokenCount\": 31,\"totalTokenCount\": 12125,\"thoughtsTokenCount\": 94,\"toolUsePromptTokenCount\": 7},\"modelVersion\": \"gemini-2.5-pro\"}\r\n\r\n";

    fn stream_expected() -> Summary {
        Summary {
            usage: Some(Usage {
                input_tokens: 4_007,
                output_tokens: 125,
                cache_read_tokens: 8_000,
                ..Usage::default()
            }),
            completed: true,
            final_usage: true,
            error: None,
            // `**Planning**` 12, `I'll read \"a.rs\".` 19, `{"absolute_path": "/a.rs"}` 26.
            content_bytes: 12 + 19 + 26,
            model: Some("gemini-2.5-pro".into()),
            finish_reason: Some("STOP".into()),
            events_seen: 3,
            malformed_events: 0,
        }
    }

    #[test]
    fn a_stream_read_at_every_split_point() {
        assert_eq!(every_split(STREAM.as_bytes()), stream_expected());
        for nl in ["\n", "\r"] {
            let s = STREAM.replace("\r\n", nl);
            assert_eq!(every_split(s.as_bytes()), stream_expected(), "{nl:?}");
        }
    }

    #[test]
    fn every_truncation_is_consistent() {
        // Cut anywhere: never panics, complete (and final) only once the finishing chunk is
        // terminated, usage never more than the whole stream's.
        let stream = STREAM.as_bytes();
        let finish_end = STREAM.len();
        let full = whole(stream);
        for end in 0..=stream.len() {
            let got = whole(&stream[..end]);
            assert_eq!(got.completed, end >= finish_end - 1, "cut at {end}");
            assert_eq!(got.final_usage, got.completed, "cut at {end}");
            assert!(got.content_bytes <= full.content_bytes);
            assert!(got.usage.unwrap_or_default().output_tokens <= 125);
            assert_eq!(got.malformed_events, 0, "cut at {end}");
        }
    }

    #[test]
    fn the_last_value_of_each_usage_field_wins() {
        let stream = "data: {\"usageMetadata\":{\"promptTokenCount\":100,\"candidatesTokenCount\":5}}\n\n\
            data: {\"usageMetadata\":{\"candidatesTokenCount\":40,\"promptTokenCount\":null,\"thoughtsTokenCount\":\"10\"}}\n\n\
            data: {\"candidates\":[{\"finishReason\":\"MAX_TOKENS\"}],\"usageMetadata\":{\"candidatesTokenCount\":50,\"thoughtsTokenCount\":-1}}\n\n";
        let got = every_split(stream.as_bytes());
        assert_eq!(
            got.usage,
            Some(Usage {
                input_tokens: 100,
                output_tokens: 60,
                ..Usage::default()
            })
        );
        assert!(got.completed && got.final_usage);
        assert_eq!(got.finish_reason.as_deref(), Some("MAX_TOKENS"));
    }

    #[test]
    fn usage_before_the_finish_is_not_final() {
        // The finishing chunk carries no usage: complete, but the usage read is not final.
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"abc\"}]}}],\"usageMetadata\":{\"promptTokenCount\":9}}\n\n\
            data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"def\"}]},\"finishReason\":\"STOP\"}]}\n\n";
        let got = every_split(stream.as_bytes());
        assert!(got.completed && !got.final_usage);
        assert_eq!(got.content_bytes, 6);
        // A finish without any usage is not complete.
        let no_usage = whole(b"data: {\"candidates\":[{\"finishReason\":\"STOP\"}]}\n\n");
        assert!(!no_usage.completed && no_usage.usage.is_none());
        // An unspecified reason finishes nothing.
        let unspecified = whole(
            b"data: {\"candidates\":[{\"finishReason\":\"FINISH_REASON_UNSPECIFIED\"}],\"usageMetadata\":{\"promptTokenCount\":1}}\n\n",
        );
        assert!(!unspecified.completed);
    }

    #[test]
    fn a_blocked_prompt_completes_with_its_input() {
        let stream = b"data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":{\"promptTokenCount\":77,\"totalTokenCount\":77}}\n\n";
        let got = every_split(stream);
        assert!(got.completed && got.final_usage);
        assert_eq!(got.finish_reason.as_deref(), Some("SAFETY"));
        assert_eq!(got.usage.unwrap().input_tokens, 77);
    }

    #[test]
    fn an_error_chunk_is_the_stream_error() {
        let stream = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ab\"}]}}]}\n\n\
            data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\n\n";
        let got = every_split(stream);
        assert_eq!(
            got.error.as_deref(),
            Some("503 UNAVAILABLE: The model is overloaded.")
        );
        assert!(!got.completed);
        assert_eq!(got.content_bytes, 2);
    }

    #[test]
    fn malformed_chunks_are_counted_and_skipped() {
        let stream = "data: not json\n\n\
            data: {\"candidates\":5}\n\n\
            data: [DONE]\n\n\
            event: message\ndata: {\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2}}\n\n\
            data: {\"candidates\":[{\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":{\"x\":1}}}\n\n";
        let got = every_split(stream.as_bytes());
        assert_eq!(got.malformed_events, 3);
        assert_eq!(got.events_seen, 5);
        assert_eq!(
            got.usage,
            Some(Usage {
                input_tokens: 3,
                output_tokens: 2,
                ..Usage::default()
            })
        );
        assert!(got.completed);
    }

    #[test]
    fn an_oversized_chunk_counts_its_cap_and_memory_stays_bounded() {
        let mut tap = GeminiTap::new();
        tap.feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":{\"data\":\"");
        let filler = vec![b'A'; 64 << 10];
        for _ in 0..48 {
            tap.feed(&filler);
            assert!(tap.framer.held_capacity() <= 2 * MAX_EVENT_BYTES + 1024);
        }
        tap.feed(b"\"}}]}}]}\n\ndata: {\"candidates\":[{\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"candidatesTokenCount\":9}}\n\n");
        assert_eq!(tap.malformed_events(), 1);
        assert_eq!(tap.content_bytes(), MAX_EVENT_BYTES as u64);
        assert_eq!(tap.usage().unwrap().output_tokens, 9);
        assert!(tap.completed());
        assert!(tap.framer.held_capacity() <= 3 * (64 << 10));
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
        const PIECES: [&[u8]; 16] = [
            b"data: ",
            b"data:",
            b"event: x\n",
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            b":",
            b"{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"},{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}}}]},\"finishReason\":\"STOP\"}]}",
            b"{\"usageMetadata\":{\"promptTokenCount\":30,\"cachedContentTokenCount\":50,\"candidatesTokenCount\":\"4\"}}",
            b"{\"error\":{\"code\":500,\"status\":\"INTERNAL\"}}",
            b"{\"promptFeedback\":{\"blockReason\":\"OTHER\"}}",
            b"\xEF\xBB\xBF",
            "日本🎉".as_bytes(),
            b"\xff\xfe\x00",
            b"}}]{[\"",
        ];
        let mut rng = Lcg(0x6e6d);
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
            for _ in 0..4 {
                let mut tap = GeminiTap::new();
                let mut rest = &soup[..];
                while !rest.is_empty() {
                    let n = 1 + (rng.next_u64() as usize) % rest.len().min(17);
                    tap.feed(&rest[..n]);
                    rest = &rest[n..];
                }
                assert_eq!(summary(&tap), expected, "round {round}");
            }
            assert_eq!(feed_chunks(soup.chunks(1)), expected, "round {round}");
        }
    }

    #[test]
    fn pure_random_bytes_never_panic() {
        let mut rng = Lcg(7);
        for _ in 0..200 {
            let mut tap = GeminiTap::new();
            let mut all = Vec::new();
            for _ in 0..(rng.next_u64() % 20) {
                let chunk: Vec<u8> = (0..(rng.next_u64() % 300))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                tap.feed(&chunk);
                all.extend_from_slice(&chunk);
            }
            let _ = summary(&tap);
            let _ = usage_from_json(&all);
            let _ = count_tokens_from_json(&all);
        }
    }

    #[test]
    fn json_answers_and_arrays() {
        let body = br#"{
            "candidates": [{"content": {"parts": [{"text": "usageMetadata: {\"promptTokenCount\": 999}"}], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 1000, "cachedContentTokenCount": 600, "candidatesTokenCount": 20,
                              "thoughtsTokenCount": 30, "toolUsePromptTokenCount": 5, "totalTokenCount": 1055},
            "modelVersion": "gemini-2.5-flash"
        }"#;
        assert_eq!(
            usage_from_json(body),
            Some(Usage {
                input_tokens: 405,
                output_tokens: 50,
                cache_read_tokens: 600,
                ..Usage::default()
            })
        );
        let array = br#" [{"usageMetadata":{"promptTokenCount":10}},{"candidates":[]},{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":3}}]"#;
        assert_eq!(
            usage_from_json(array),
            Some(Usage {
                input_tokens: 10,
                output_tokens: 3,
                ..Usage::default()
            })
        );
        // More cached than prompt (never sent, but never underflows).
        assert_eq!(
            usage_from_json(br#"{"usageMetadata":{"promptTokenCount":1,"cachedContentTokenCount":5}}"#)
                .unwrap()
                .input_tokens,
            0
        );
        for not_usage in [
            &br#"{"error":{"code":400,"message":"x","status":"INVALID_ARGUMENT"}}"#[..],
            br#"{"candidates":[]}"#,
            b"[]",
            b"not json",
            b"",
            b"42",
        ] {
            assert_eq!(usage_from_json(not_usage), None);
        }
    }

    #[test]
    fn count_tokens_answers() {
        assert_eq!(
            count_tokens_from_json(
                br#"{"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]}"#
            ),
            Some(31)
        );
        assert_eq!(count_tokens_from_json(br#"{"totalTokens": "12"}"#), Some(12));
        assert_eq!(count_tokens_from_json(br#"{"error":{"code":400}}"#), None);
        assert_eq!(count_tokens_from_json(b"{}"), None);
        assert_eq!(count_tokens_from_json(b"nope"), None);
    }
}
