//! Token usage of OpenAI responses, read on the side as the proxy relays them: the Responses
//! API's SSE ([`ResponsesTap`]), Chat Completions' SSE ([`ChatTap`]) and either one's JSON body
//! ([`usage_from_json`]).
//!
//! **Mapping to [`Usage`].** OpenAI counts cached tokens *inside* the input count and reasoning
//! tokens *inside* the output count
//! (<https://platform.openai.com/docs/api-reference/responses/object#responses/object-usage>,
//! <https://platform.openai.com/docs/api-reference/chat/object#chat/object-usage>):
//!
//! | [`Usage`] | Responses | Chat Completions |
//! | --- | --- | --- |
//! | `input_tokens` | `input_tokens - cached - written` | `prompt_tokens - cached - written` |
//! | `cache_read_tokens` | `input_tokens_details.cached_tokens` | `prompt_tokens_details.cached_tokens` |
//! | `cache_write_5m_tokens` | `input_tokens_details.cache_write_tokens` | `prompt_tokens_details.cache_write_tokens` |
//! | `output_tokens` | `output_tokens` (reasoning included, billed once) | `completion_tokens` (same) |
//! | `web_search_requests` | `web_search_call` items (`response.web_search_call.completed` events) | - |
//!
//! Cache writes are billed by GPT-5.6 and later only (at 1.25x input, reported as
//! `cache_write_tokens`); they are priced as the table's 5-minute writes
//! (`cache_creation_input_token_cost`). A detail count larger than the total is kept as
//! reported (the uncached input is then 0): a malformed count never lowers the charge below
//! what the details say.
//!
//! **Streams.** Both taps use the crate's bounded SSE framer ([`crate::sse::Framer`]), decline
//! the data of events they do not read, never panic, and hold at most one event (bounded by
//! [`RESPONSES_MAX_EVENT_BYTES`] or [`CHAT_MAX_EVENT_BYTES`]); an event over the bound counts
//! as malformed (a content delta over it counts as that many delivered bytes).
//! - Responses: the final usage is in `response.completed`, `response.incomplete` (the
//!   response stopped early, e.g. at `max_output_tokens`; still billed) or `response.failed`.
//!   Only `response.completed` completes the stream. `error` events and `response.failed` are
//!   stream errors. Content bytes are the raw `delta` strings of every `response.*.delta`
//!   event (output text, refusal, function call arguments, custom tool input such as Codex's
//!   `apply_patch`, reasoning text and summaries).
//! - Chat: the usage is the last non-null `usage` (OpenAI sends it in a final chunk with
//!   `choices: []` when `stream_options.include_usage` is true, see
//!   [`super::request::ensure_usage_in_stream`]); the stream is complete at `data: [DONE]`
//!   after it. A chunk with an `error` object (or an `event: error`) is a stream error.
//!   Content bytes are the raw `content`, `refusal`, `reasoning_content`/`reasoning` strings
//!   and tool call `name`/`arguments` of every choice's `delta`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::Api;
use crate::sse::{Data, Event, Framer, Handler};
use crate::usage::{StreamTap, Usage};

/// Most data one Responses event may have for the tap to read it. The terminal events carry
/// the whole response, its output included (all the text again, tool call arguments, encrypted
/// reasoning): 128k output tokens fit with room to spare.
pub const RESPONSES_MAX_EVENT_BYTES: usize = 4 << 20;

/// Most data one Chat Completions chunk may have for the tap to read it (chunks are small).
pub const CHAT_MAX_EVENT_BYTES: usize = crate::usage::MAX_EVENT_BYTES;

/// Usage from a complete, non-streaming response body of `api`, or `None` when the body is not
/// one (an error body, another object, not JSON, no `usage`).
pub fn usage_from_json(api: Api, body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        object: Option<Cow<'a, str>>,
        #[serde(default)]
        usage: Option<Value>,
        #[serde(borrow, default)]
        output: Option<Vec<&'a RawValue>>,
    }
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    let expected = match api {
        Api::Responses => "response",
        Api::Chat => "chat.completion",
    };
    if body.object.as_deref().is_some_and(|o| o != expected) {
        return None;
    }
    let mut usage = map_usage(api, body.usage.as_ref()?)?;
    if api == Api::Responses {
        usage.web_search_requests = body
            .output
            .unwrap_or_default()
            .iter()
            .filter(|item| item_type(item).as_deref() == Some("web_search_call"))
            .count() as u64;
    }
    Some(usage)
}

/// The `type` of an output item; `None` when it has none or is not an object.
fn item_type(item: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<TypeOnly<'_>>(item.get()).ok()?.kind
}

/// A `usage` object of `api` as [`Usage`] (see the module docs); `None` when it is not an
/// object. Counts that are absent or not non-negative integers read as 0.
fn map_usage(api: Api, usage: &Value) -> Option<Usage> {
    let (input, details, output) = match api {
        Api::Responses => ("input_tokens", "input_tokens_details", "output_tokens"),
        Api::Chat => ("prompt_tokens", "prompt_tokens_details", "completion_tokens"),
    };
    let usage = usage.as_object()?;
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let detail = |name: &str| count(usage.get(details).and_then(|d| d.get(name)));
    let (cached, written) = (detail("cached_tokens"), detail("cache_write_tokens"));
    Some(Usage {
        input_tokens: count(usage.get(input))
            .saturating_sub(cached)
            .saturating_sub(written),
        output_tokens: count(usage.get(output)),
        cache_write_5m_tokens: written,
        cache_write_1h_tokens: 0,
        cache_read_tokens: cached,
        web_search_requests: 0,
    })
}

/// Whether a `usage` object of `api` carries the output count: the final usage.
fn has_output(api: Api, usage: &Value) -> bool {
    let field = match api {
        Api::Responses => "output_tokens",
        Api::Chat => "completion_tokens",
    };
    usage.get(field).and_then(Value::as_u64).is_some()
}

/// Bytes of a delta as sent: a JSON string's raw text (escapes included, quotes not), any
/// other non-null value's whole text.
fn raw_len(raw: Option<&RawValue>) -> u64 {
    match raw.map(RawValue::get) {
        None | Some("null") => 0,
        Some(s) if s.starts_with('"') => s.len().saturating_sub(2) as u64,
        Some(s) => s.len() as u64,
    }
}

/// `code: message` of an error object (`code`, else `type`), or what there is of it.
fn describe_error(error: &Value) -> String {
    let text = |k: &str| error.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    // The `type` of an `error` event is the event's, not the error's.
    let kind = text("type").filter(|t| *t != "error");
    match (text("code").or(kind), text("message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        (None, Some(message)) => message.to_owned(),
        (None, None) => "error".to_owned(),
    }
}

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// What either tap has read so far.
#[derive(Debug, Default)]
struct Common {
    usage: Option<Usage>,
    final_usage: bool,
    completed: bool,
    error: Option<String>,
    model: Option<String>,
    content_bytes: u64,
    events_seen: u64,
    malformed_events: u64,
}

// ---------------------------------------------------------------------------------------------
// Responses API

/// The event type of a Responses stream, decided by the `event:` line (or the data's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponsesEvent {
    /// No `event:` line (or `event: message`): the type is read from the data.
    Unnamed,
    Completed,
    Incomplete,
    Failed,
    Error,
    /// `response.web_search_call.completed`: one billed search; its data is not needed.
    WebSearchDone,
    /// `response.*.delta`: only the length of its `delta` is read.
    Delta,
    /// Anything else (`response.created`, `response.output_item.done`, ...): data ignored.
    Other,
}

impl ResponsesEvent {
    fn from_name(name: Option<&[u8]>) -> Self {
        match name {
            Some(b"" | b"message") => Self::Unnamed,
            Some(b"response.completed") => Self::Completed,
            Some(b"response.incomplete") => Self::Incomplete,
            Some(b"response.failed") => Self::Failed,
            Some(b"error") => Self::Error,
            Some(b"response.web_search_call.completed") => Self::WebSearchDone,
            Some(n) if n.starts_with(b"response.") && n.ends_with(b".delta") => Self::Delta,
            _ => Self::Other,
        }
    }

    fn wants_data(self) -> bool {
        !matches!(self, Self::Other | Self::WebSearchDone)
    }
}

/// Incremental reader of a Responses API SSE stream (see the module docs).
///
/// Feed it the body exactly as it comes off the wire: chunks may split anywhere. It never
/// panics and holds at most [`RESPONSES_MAX_EVENT_BYTES`] of one event.
#[derive(Debug)]
pub struct ResponsesTap {
    framer: Framer,
    read: ResponsesRead,
}

#[derive(Debug, Default)]
struct ResponsesRead {
    common: Common,
    incomplete: bool,
    web_searches: u64,
}

impl Default for ResponsesTap {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponsesTap {
    /// A tap for a new stream.
    pub fn new() -> Self {
        Self {
            framer: Framer::new(RESPONSES_MAX_EVENT_BYTES),
            read: ResponsesRead::default(),
        }
    }

    /// `response.model` of the terminal event.
    pub fn model(&self) -> Option<&str> {
        self.read.common.model.as_deref()
    }

    /// Whether the response ended `incomplete` (its usage is still final).
    pub fn incomplete(&self) -> bool {
        self.read.incomplete
    }

    /// Events dispatched, of every type.
    pub fn events_seen(&self) -> u64 {
        self.read.common.events_seen
    }

    /// Events the tap needed but could not read (unparseable JSON, data over the bound).
    pub fn malformed_events(&self) -> u64 {
        self.read.common.malformed_events
    }
}

impl StreamTap for ResponsesTap {
    fn feed(&mut self, chunk: &[u8]) {
        self.framer.feed(chunk, &mut self.read);
    }

    /// The usage of the terminal event, with the web searches counted so far.
    fn usage(&self) -> Option<Usage> {
        let searches = self.read.web_searches;
        match self.read.common.usage {
            Some(usage) => Some(Usage {
                web_search_requests: searches,
                ..usage
            }),
            None if searches > 0 => Some(Usage {
                web_search_requests: searches,
                ..Usage::default()
            }),
            None => None,
        }
    }

    /// Whether `response.completed` was seen.
    fn completed(&self) -> bool {
        self.read.common.completed
    }

    /// The last `error` event or `response.failed` error, as `code: message`.
    fn stream_error(&self) -> Option<String> {
        self.read.common.error.clone()
    }

    fn content_bytes(&self) -> u64 {
        self.read.common.content_bytes
    }

    /// Whether a terminal event carried `usage.output_tokens`.
    fn final_usage(&self) -> bool {
        self.read.common.final_usage
    }
}

impl Handler for ResponsesRead {
    fn wants_data(&mut self, name: Option<&[u8]>) -> bool {
        ResponsesEvent::from_name(name).wants_data()
    }

    fn on_event(&mut self, event: Option<Event<'_>>, _end: usize) {
        let Some(event) = event else { return };
        self.common.events_seen += 1;
        let kind = ResponsesEvent::from_name(event.name);
        match event.data {
            Data::Kept(data) => self.read(kind, data),
            Data::TooLarge => {
                self.common.malformed_events += 1;
                if kind == ResponsesEvent::Delta {
                    self.common.content_bytes += RESPONSES_MAX_EVENT_BYTES as u64;
                }
            }
            Data::Skipped if kind.wants_data() => self.common.malformed_events += 1,
            Data::Skipped => self.read(kind, &[]),
        }
    }
}

#[derive(Deserialize)]
struct Terminal {
    #[serde(default)]
    response: Option<TerminalResponse>,
}

#[derive(Deserialize)]
struct TerminalResponse {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct DeltaEvent<'a> {
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
}

impl ResponsesRead {
    fn read(&mut self, kind: ResponsesEvent, data: &[u8]) {
        let parsed = match kind {
            ResponsesEvent::Other => Ok(()),
            ResponsesEvent::WebSearchDone => {
                self.web_searches += 1;
                Ok(())
            }
            ResponsesEvent::Completed | ResponsesEvent::Incomplete | ResponsesEvent::Failed => {
                self.on_terminal(kind, data)
            }
            ResponsesEvent::Error => serde_json::from_slice::<Value>(data).map(|event| {
                // `{"type":"error","code","message",..}`, or the error nested in `error`.
                let error = match event.get("error") {
                    Some(nested) if nested.is_object() => nested,
                    _ => &event,
                };
                self.common.error = Some(describe_error(error));
            }),
            ResponsesEvent::Delta => match serde_json::from_slice::<DeltaEvent<'_>>(data) {
                Ok(event) => {
                    self.common.content_bytes += raw_len(event.delta);
                    Ok(())
                }
                Err(e) => {
                    // Delivered all the same.
                    self.common.content_bytes += data.len() as u64;
                    Err(e)
                }
            },
            ResponsesEvent::Unnamed => match serde_json::from_slice::<TypeOnly<'_>>(data) {
                Ok(tagged) => {
                    let name = tagged.kind.as_deref().unwrap_or("");
                    match ResponsesEvent::from_name(Some(name.as_bytes())) {
                        ResponsesEvent::Unnamed => {}
                        kind => self.read(kind, data),
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        if parsed.is_err() {
            self.common.malformed_events += 1;
        }
    }

    fn on_terminal(&mut self, kind: ResponsesEvent, data: &[u8]) -> serde_json::Result<()> {
        let event: Terminal = serde_json::from_slice(data)?;
        let response = event.response;
        if let Some(response) = &response {
            if let Some(model) = response.model.as_ref().and_then(Value::as_str) {
                self.common.model = Some(model.to_owned());
            }
            if let Some(usage) = &response.usage {
                if let Some(mapped) = map_usage(Api::Responses, usage) {
                    self.common.usage = Some(mapped);
                    self.common.final_usage |= has_output(Api::Responses, usage);
                }
            }
        }
        match kind {
            ResponsesEvent::Completed => self.common.completed = true,
            ResponsesEvent::Incomplete => self.incomplete = true,
            _ => {
                let error = response.and_then(|r| r.error).filter(Value::is_object);
                self.common.error = Some(match error {
                    Some(error) => describe_error(&error),
                    None => "response.failed".to_owned(),
                });
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Chat Completions

/// Incremental reader of a Chat Completions SSE stream (see the module docs).
///
/// Feed it the body exactly as it comes off the wire: chunks may split anywhere. It never
/// panics and holds at most [`CHAT_MAX_EVENT_BYTES`] of one event.
#[derive(Debug)]
pub struct ChatTap {
    framer: Framer,
    read: ChatRead,
}

/// What the Chat tap has read so far.
#[derive(Debug, Default)]
struct ChatRead {
    common: Common,
}

impl Default for ChatTap {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatTap {
    /// A tap for a new stream.
    pub fn new() -> Self {
        Self {
            framer: Framer::new(CHAT_MAX_EVENT_BYTES),
            read: ChatRead::default(),
        }
    }

    /// The chunks' `model`.
    pub fn model(&self) -> Option<&str> {
        self.read.common.model.as_deref()
    }

    /// Events dispatched, `[DONE]` included.
    pub fn events_seen(&self) -> u64 {
        self.read.common.events_seen
    }

    /// Chunks the tap could not read (unparseable JSON, data over the bound).
    pub fn malformed_events(&self) -> u64 {
        self.read.common.malformed_events
    }
}

impl StreamTap for ChatTap {
    fn feed(&mut self, chunk: &[u8]) {
        self.framer.feed(chunk, &mut self.read);
    }

    /// The last non-null `usage`.
    fn usage(&self) -> Option<Usage> {
        self.read.common.usage
    }

    /// Whether `data: [DONE]` followed the usage chunk.
    fn completed(&self) -> bool {
        self.read.common.completed
    }

    /// The last error chunk, as `code: message`.
    fn stream_error(&self) -> Option<String> {
        self.read.common.error.clone()
    }

    fn content_bytes(&self) -> u64 {
        self.read.common.content_bytes
    }

    /// Whether a `usage` with `completion_tokens` was seen.
    fn final_usage(&self) -> bool {
        self.read.common.final_usage
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<ChoiceDelta<'a>>,
}

#[derive(Deserialize)]
struct ChoiceDelta<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

impl ChoiceDelta<'_> {
    fn content_len(&self) -> u64 {
        let calls: u64 = self
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|c| c.function.as_ref())
            .map(|f| raw_len(f.name) + raw_len(f.arguments))
            .sum();
        [self.content, self.refusal, self.reasoning_content, self.reasoning]
            .into_iter()
            .map(raw_len)
            .sum::<u64>()
            + calls
    }
}

impl Handler for ChatRead {
    fn on_event(&mut self, event: Option<Event<'_>>, _end: usize) {
        let Some(event) = event else { return };
        self.common.events_seen += 1;
        match event.data {
            Data::Kept(data) => {
                if event.name == Some(b"error") {
                    self.on_error_event(data);
                } else {
                    self.on_chunk(data);
                }
            }
            Data::TooLarge => {
                self.common.malformed_events += 1;
                self.common.content_bytes += CHAT_MAX_EVENT_BYTES as u64;
            }
            // Every event's data is wanted.
            Data::Skipped => self.common.malformed_events += 1,
        }
    }
}

impl ChatRead {
    fn on_chunk(&mut self, data: &[u8]) {
        if data.trim_ascii() == b"[DONE]" {
            self.common.completed |= self.common.final_usage;
            return;
        }
        let chunk: Chunk<'_> = match serde_json::from_slice(data) {
            Ok(chunk) => chunk,
            Err(_) => {
                // Delivered all the same.
                self.common.malformed_events += 1;
                self.common.content_bytes += data.len() as u64;
                return;
            }
        };
        if self.common.model.is_none() {
            self.common.model = chunk.model.map(Cow::into_owned);
        }
        self.common.content_bytes += chunk
            .choices
            .iter()
            .flatten()
            .filter_map(|c| c.delta.as_ref())
            .map(ChoiceDelta::content_len)
            .sum::<u64>();
        if let Some(usage) = &chunk.usage {
            if let Some(mapped) = map_usage(Api::Chat, usage) {
                self.common.usage = Some(mapped);
                self.common.final_usage |= has_output(Api::Chat, usage);
            }
        }
        if let Some(error) = chunk.error.as_ref().filter(|e| e.is_object()) {
            self.common.error = Some(describe_error(error));
        }
    }

    /// An `event: error` (not OpenAI's own shape, but OpenAI-compatible servers send it): the
    /// data is an error object, or holds one in `error`.
    fn on_error_event(&mut self, data: &[u8]) {
        match serde_json::from_slice::<Value>(data) {
            Ok(value) => {
                let error = match value.get("error") {
                    Some(nested) if nested.is_object() => nested,
                    _ => &value,
                };
                self.common.error = Some(describe_error(error));
            }
            Err(_) => {
                self.common.malformed_events += 1;
                self.common.error = Some(String::from_utf8_lossy(data).chars().take(512).collect());
            }
        }
    }
}

#[cfg(test)]
mod tests;
