//! Parsing of `/v1/messages` request bodies and construction of the fake's replies (JSON messages
//! and SSE event streams).

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{DEFAULT_REPLY, Scenario, TOOL_TRIGGER, TOOL_USE_MARKER, TOOL_USE_OUTPUT_TOKENS};

/// A request-validation failure: becomes a 400 `invalid_request_error`.
#[derive(Debug)]
pub(crate) struct Invalid(pub String);

/// What the fake learned from a `/v1/messages` body.
#[derive(Debug)]
pub(crate) struct MessagesRequest {
    pub model: String,
    pub stream: bool,
    pub reply: Reply,
    /// Scenario selected by a `[[scenario:NAME]]` marker in the last user message, if any.
    /// `Err(name)` for an unknown name.
    pub marker: Option<Result<Scenario, String>>,
}

/// The content the fake answers with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// One text block.
    Text(Cow<'static, str>),
    /// One `tool_use` block calling Bash with `echo TOOL_OK`.
    BashToolUse,
    /// One `tool_use` block calling a named tool (the `[[tool_use:...]]` marker).
    ToolUse {
        /// Tool name.
        name: String,
        /// Tool input.
        input: Value,
    },
    /// A text block, then a `tool_use` block calling a named tool (the `[[tool_use:...]]`
    /// marker in scenario `big`: the model writes at length before calling the tool).
    TextThenTool {
        /// The text of the first block.
        text: Cow<'static, str>,
        /// Tool name.
        name: String,
        /// Tool input.
        input: Value,
    },
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageHead<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ToolHead<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// Parses and validates a `/v1/messages` (or count_tokens, with `need_max_tokens = false`) body.
pub(crate) fn parse_messages_request(body: &[u8], need_max_tokens: bool) -> Result<MessagesRequest, Invalid> {
    let top: Top<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            Invalid(format!("Request body must be a JSON object: {e}"))
        } else {
            Invalid(format!(
                "There was an error parsing the body of your request: {e}"
            ))
        }
    })?;

    let model = match top.model {
        None => return Err(Invalid("model: Field required".into())),
        Some(raw) => serde_json::from_str::<Cow<'_, str>>(raw.get())
            .map_err(|_| Invalid("model: Input should be a valid string".into()))?,
    };
    if model.is_empty() {
        return Err(Invalid("model: String should have at least 1 character".into()));
    }

    match top.max_tokens {
        None if need_max_tokens => return Err(Invalid("max_tokens: Field required".into())),
        None => {}
        Some(raw) => {
            let n = serde_json::from_str::<u64>(raw.get())
                .map_err(|_| Invalid("max_tokens: Input should be a valid integer".into()))?;
            if n == 0 {
                return Err(Invalid(
                    "max_tokens: Input should be greater than or equal to 1".into(),
                ));
            }
        }
    }

    let messages: Vec<MessageHead<'_>> = match top.messages {
        None => return Err(Invalid("messages: Field required".into())),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|e| {
            Invalid(format!(
                "messages: Input should be a valid list of messages with a role: {e}"
            ))
        })?,
    };
    if messages.is_empty() {
        return Err(Invalid("messages: at least one message is required".into()));
    }

    let stream = match top.stream {
        None => false,
        Some(raw) => serde_json::from_str::<Option<bool>>(raw.get())
            .map_err(|_| Invalid("stream: Input should be a valid boolean".into()))?
            .unwrap_or(false),
    };

    let view = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .and_then(|m| m.content)
        .map(UserView::from_content)
        .unwrap_or_default();

    let reply = if let Some(result) = &view.tool_result {
        Reply::Text(Cow::Owned(format!("Tool said: {}", result.trim())))
    } else if let Some((name, input)) = view.prompt().and_then(tool_use_marker) {
        Reply::ToolUse { name, input }
    } else if view.prompt().is_some_and(|p| p.contains(TOOL_TRIGGER)) && top.tools.is_some_and(declares_bash)
    {
        Reply::BashToolUse
    } else {
        Reply::Text(Cow::Borrowed(DEFAULT_REPLY))
    };

    Ok(MessagesRequest {
        model: model.into_owned(),
        stream,
        reply,
        marker: view.marker(),
    })
}

/// Parses `[[tool_use:NAME]]` or `[[tool_use:NAME:{json}]]`.
fn tool_use_marker(prompt: &str) -> Option<(String, Value)> {
    let rest = &prompt[prompt.find(TOOL_USE_MARKER)? + TOOL_USE_MARKER.len()..];
    let inner = &rest[..rest.find("]]")?];
    let (name, input) = match inner.split_once(':') {
        Some((n, json)) => (n, serde_json::from_str(json).ok()?),
        None => (inner, json!({})),
    };
    (!name.is_empty()).then(|| (name.to_owned(), input))
}

fn declares_bash(tools: &RawValue) -> bool {
    serde_json::from_str::<Vec<ToolHead<'_>>>(tools.get())
        .map(|tools| tools.iter().any(|t| t.name.as_deref() == Some("Bash")))
        .unwrap_or(false)
}

/// The parts of the last user message the fake reacts to.
#[derive(Debug, Default)]
struct UserView {
    /// Text of the message (a string content, or every `text` block in order).
    texts: Vec<String>,
    /// Text content of the last `tool_result` block, if the message carries one.
    tool_result: Option<String>,
}

impl UserView {
    fn from_content(raw: &RawValue) -> Self {
        let mut view = UserView::default();
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::String(s)) => view.texts.push(s),
            Ok(Value::Array(blocks)) => {
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(t) = block.get("text").and_then(Value::as_str) {
                                view.texts.push(t.to_owned());
                            }
                        }
                        Some("tool_result") => {
                            view.tool_result = Some(tool_result_text(block.get("content")));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        view
    }

    /// The last text that is not a `<system-reminder>` block.
    fn prompt(&self) -> Option<&str> {
        self.texts
            .iter()
            .rev()
            .find(|t| !t.trim_start().starts_with("<system-reminder>"))
            .map(String::as_str)
    }

    fn marker(&self) -> Option<Result<Scenario, String>> {
        self.texts.iter().find_map(|t| find_marker(t))
    }
}

/// Finds `[[scenario:NAME]]` in a text.
pub(crate) fn find_marker(text: &str) -> Option<Result<Scenario, String>> {
    const OPEN: &str = "[[scenario:";
    let start = text.find(OPEN)? + OPEN.len();
    let rest = &text[start..];
    let end = rest.find("]]")?;
    let name = rest[..end].trim();
    Some(Scenario::from_name(name).ok_or_else(|| name.to_owned()))
}

fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut out = String::new();
            for block in blocks {
                if block.get("type").and_then(Value::as_str) == Some("text") {
                    if let Some(t) = block.get("text").and_then(Value::as_str) {
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(t);
                    }
                }
            }
            out
        }
        _ => String::new(),
    }
}

/// Token counts of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tokens {
    pub input: u64,
    pub cache_5m: u64,
    pub cache_1h: u64,
    pub cache_read: u64,
    pub output: u64,
}

impl Tokens {
    /// Deterministic counts: `body_len / 4` total input tokens, all uncached unless `cache`.
    pub fn new(body_len: usize, cache: bool, output: u64) -> Self {
        let total = (body_len / 4) as u64;
        if cache {
            let cache_read = total / 2;
            let cache_5m = total / 4;
            let cache_1h = total / 8;
            Tokens {
                input: total - cache_read - cache_5m - cache_1h,
                cache_5m,
                cache_1h,
                cache_read,
                output,
            }
        } else {
            Tokens {
                input: total,
                output,
                ..Tokens::default()
            }
        }
    }

    /// The full usage object (non-streaming `usage`, and the cumulative usage after a stream).
    pub fn usage(&self, output: u64) -> Value {
        json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_5m + self.cache_1h,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_5m,
                "ephemeral_1h_input_tokens": self.cache_1h,
            },
            "output_tokens": output,
            "service_tier": "standard",
        })
    }

    /// The usage carried by `message_delta` (cumulative).
    fn delta_usage(&self) -> Value {
        json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_5m + self.cache_1h,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        })
    }
}

/// Output tokens of a reply: whitespace-separated words, or [`TOOL_USE_OUTPUT_TOKENS`].
pub(crate) fn output_tokens(reply: &Reply) -> u64 {
    match reply {
        Reply::Text(t) => t.split_whitespace().count() as u64,
        Reply::BashToolUse | Reply::ToolUse { .. } => TOOL_USE_OUTPUT_TOKENS,
        Reply::TextThenTool { text, .. } => text.split_whitespace().count() as u64 + TOOL_USE_OUTPUT_TOKENS,
    }
}

/// The input of the Bash tool call.
pub(crate) fn bash_input() -> Value {
    json!({"command": "echo TOOL_OK", "description": "Print TOOL_OK"})
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text(_) => "end_turn",
        Reply::BashToolUse | Reply::ToolUse { .. } | Reply::TextThenTool { .. } => "tool_use",
    }
}

/// Identifiers of one reply.
pub(crate) struct Ids<'a> {
    pub message_id: &'a str,
    pub tool_use_id: &'a str,
}

/// The non-streaming JSON message.
pub(crate) fn message_json(model: &str, reply: &Reply, tokens: &Tokens, ids: &Ids<'_>) -> Value {
    let content = match reply {
        Reply::Text(t) => json!([{"type": "text", "text": t}]),
        Reply::BashToolUse => json!([{
            "type": "tool_use",
            "id": ids.tool_use_id,
            "name": "Bash",
            "input": bash_input(),
        }]),
        Reply::ToolUse { name, input } => json!([{
            "type": "tool_use",
            "id": ids.tool_use_id,
            "name": name,
            "input": input,
        }]),
        Reply::TextThenTool { text, name, input } => json!([
            {"type": "text", "text": text},
            {"type": "tool_use", "id": ids.tool_use_id, "name": name, "input": input},
        ]),
    };
    json!({
        "id": ids.message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(reply),
        "stop_sequence": null,
        "usage": tokens.usage(tokens.output),
    })
}

/// One SSE event: `event: NAME\ndata: JSON\n\n`.
pub(crate) fn sse(event: &str, data: &Value) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Serializing a `Value` to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn ping() -> Bytes {
    static PING: OnceLock<Bytes> = OnceLock::new();
    PING.get_or_init(|| sse("ping", &json!({"type": "ping"}))).clone()
}

/// How the SSE stream of a reply should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamShape {
    /// The complete standard sequence.
    Complete,
    /// Complete, with a `ping` after every delta (scenario `slow`).
    ExtraPings,
    /// message_start, ping, content_block_start, one delta, then an `error` event.
    ErrorAfterFirstDelta,
    /// message_start, ping, content_block_start, one delta, then nothing (the caller cuts).
    CutAfterFirstDelta,
    /// Every content block complete, then nothing: no message_delta, no message_stop (the
    /// caller cuts).
    CutBeforeMessageDelta,
}

/// Builds the SSE events of a streamed reply.
pub(crate) fn sse_events(
    model: &str,
    reply: &Reply,
    tokens: &Tokens,
    ids: &Ids<'_>,
    shape: StreamShape,
    big: bool,
) -> Vec<Bytes> {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": ids.message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": tokens.usage(1),
        },
    });
    let text_block = |text: &str| {
        (
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
            if big {
                big_reply_deltas().to_vec()
            } else {
                text_deltas(text, 1)
            },
        )
    };
    let tool_block = |index: u64, name: &str, input: &Value| {
        (
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": ids.tool_use_id,
                                     "name": name, "input": {}}}),
            tool_input_deltas(index, input),
        )
    };
    let blocks: Vec<(Value, Vec<Bytes>)> = match reply {
        Reply::Text(text) => vec![text_block(text)],
        Reply::BashToolUse => vec![tool_block(0, "Bash", &bash_input())],
        Reply::ToolUse { name, input } => vec![tool_block(0, name, input)],
        Reply::TextThenTool { text, name, input } => vec![text_block(text), tool_block(1, name, input)],
    };

    let mut events = Vec::with_capacity(blocks.iter().map(|b| b.1.len()).sum::<usize>() * 2 + 8);
    events.push(sse("message_start", &start));
    events.push(ping());
    for (index, (block_start, deltas)) in blocks.into_iter().enumerate() {
        events.push(sse("content_block_start", &block_start));
        match shape {
            StreamShape::ErrorAfterFirstDelta | StreamShape::CutAfterFirstDelta => {
                events.extend(deltas.into_iter().take(1));
                if shape == StreamShape::ErrorAfterFirstDelta {
                    events.push(sse(
                        "error",
                        &json!({"type": "error",
                                "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                    ));
                }
                return events;
            }
            StreamShape::ExtraPings => {
                for delta in deltas {
                    events.push(delta);
                    events.push(ping());
                }
            }
            StreamShape::Complete | StreamShape::CutBeforeMessageDelta => events.extend(deltas),
        }
        events.push(sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    if shape == StreamShape::CutBeforeMessageDelta {
        return events;
    }
    events.push(sse(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(reply), "stop_sequence": null},
                "usage": tokens.delta_usage()}),
    ));
    events.push(sse("message_stop", &json!({"type": "message_stop"})));
    events
}

/// `text_delta` events carrying `words_per_delta` words each (the whitespace before a word goes
/// with it), so that the concatenation of the deltas is exactly `text`.
fn text_deltas(text: &str, words_per_delta: usize) -> Vec<Bytes> {
    let per = words_per_delta.max(1);
    let mut cuts = vec![0];
    let mut prev_ws = true;
    let mut run_start = 0; // start of the whitespace run before the current word
    let mut words = 0usize;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if ws && !prev_ws {
            run_start = i;
        }
        if !ws && prev_ws {
            if words > 0 && words % per == 0 {
                cuts.push(run_start);
            }
            words += 1;
        }
        prev_ws = ws;
    }
    cuts.push(text.len());
    let pieces: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
    pieces
        .into_iter()
        .map(|p| {
            sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": p}}),
            )
        })
        .collect()
}

/// `input_json_delta` events: an empty first chunk (as the real API sends), then the input JSON
/// in 9-byte pieces, which split string values in the middle.
fn tool_input_deltas(index: u64, input: &Value) -> Vec<Bytes> {
    let input = input.to_string();
    let mut pieces = vec![""];
    let mut rest = input.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(9);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    pieces
        .into_iter()
        .map(|p| {
            sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": p}}),
            )
        })
        .collect()
}

/// Target size of the `big` reply, in bytes.
pub(crate) const BIG_REPLY_BYTES: usize = 200 * 1024;

/// The text of the `big` scenario: ~200 KB of words (including multi-byte UTF-8 characters),
/// starting with `BIG_REPLY_BEGIN` and ending with `BIG_REPLY_END`.
pub(crate) fn big_reply_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        const WORDS: [&str; 20] = [
            "lorem",
            "ipsum",
            "dolor",
            "sit",
            "amet,",
            "consectetur",
            "adipiscing",
            "elit,",
            "sed",
            "do",
            "eiusmod",
            "tempor",
            "incididunt",
            "ut",
            "labore",
            "et",
            "dolore",
            "magna",
            "café",
            "日本語🦀.",
        ];
        let mut text = String::with_capacity(BIG_REPLY_BYTES + 64);
        text.push_str("BIG_REPLY_BEGIN");
        let mut n = 0usize;
        while text.len() < BIG_REPLY_BYTES - 16 {
            n += 1;
            text.push(if n % 40 == 0 { '\n' } else { ' ' });
            text.push_str(WORDS[n % WORDS.len()]);
        }
        text.push_str(" BIG_REPLY_END");
        text
    })
}

/// Target size of the `huge-json` reply text, in bytes: over the proxy's 16 MiB JSON usage
/// tap.
pub(crate) const HUGE_REPLY_BYTES: usize = 17 << 20;

/// The text of the `huge-json` scenario: the `big` text repeated to ~[`HUGE_REPLY_BYTES`].
pub(crate) fn huge_reply_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let big = big_reply_text();
        let mut text = String::with_capacity(HUGE_REPLY_BYTES + big.len() + 1);
        while text.len() < HUGE_REPLY_BYTES {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(big);
        }
        text
    })
}

fn big_reply_deltas() -> &'static [Bytes] {
    static DELTAS: OnceLock<Vec<Bytes>> = OnceLock::new();
    DELTAS.get_or_init(|| text_deltas(big_reply_text(), 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta_texts(events: &[Bytes]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let s = std::str::from_utf8(e).unwrap();
                let data = s.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
                let v: Value = serde_json::from_str(data).unwrap();
                v["delta"]["text"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn text_deltas_rebuild_the_text() {
        for (text, per) in [
            ("Hello from fake-anthropic.", 1),
            ("  leading and  double  spaces ", 1),
            ("one", 1),
            ("", 1),
            ("a b c d e f g", 3),
            ("Tool said: TOOL_OK", 1),
        ] {
            let pieces = delta_texts(&text_deltas(text, per));
            assert_eq!(pieces.concat(), text, "{text:?}");
        }
        let pieces = delta_texts(&text_deltas("Hello from fake-anthropic.", 1));
        assert_eq!(pieces, ["Hello", " from", " fake-anthropic."]);
    }

    #[test]
    fn big_text_rebuilds() {
        let text = big_reply_text();
        assert!(text.len() >= BIG_REPLY_BYTES - 16);
        let pieces = delta_texts(big_reply_deltas());
        assert!(pieces.len() > 1000);
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn markers() {
        assert_eq!(find_marker("x [[scenario:cache]] y"), Some(Ok(Scenario::Cache)));
        assert_eq!(find_marker("[[scenario:nope]]"), Some(Err("nope".to_owned())));
        assert_eq!(find_marker("[[scenario:cache"), None);
        assert_eq!(find_marker("plain"), None);
    }

    #[test]
    fn tool_use_markers() {
        assert_eq!(
            tool_use_marker(r#"go [[tool_use:mcp__gw__a__b:{"text":"x"}]] now"#),
            Some(("mcp__gw__a__b".to_owned(), json!({"text": "x"})))
        );
        assert_eq!(
            tool_use_marker("[[tool_use:Bash]]"),
            Some(("Bash".to_owned(), json!({})))
        );
        assert_eq!(tool_use_marker("[[tool_use:Bash:{bad]]"), None);
        assert_eq!(tool_use_marker("[[tool_use:]]"), None);
        assert_eq!(tool_use_marker("[[tool_use:Bash"), None);
        let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"[[tool_use:Read:{\"path\":\"/a\"}]]"}]}"#;
        let req = parse_messages_request(body, true).unwrap();
        assert_eq!(
            req.reply,
            Reply::ToolUse {
                name: "Read".into(),
                input: json!({"path": "/a"})
            }
        );
    }
}
