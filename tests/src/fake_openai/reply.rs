//! Parsing of Responses and Chat Completions request bodies, and the fake's replies (JSON and
//! SSE) in both wire formats.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::server::{self, Answer, Ctx, byte_pieces, echo_command, json_response, word_pieces};
use super::{
    DEFAULT_REPLY, REASONING_TOKENS, SHELL_TOOLS, Scenario, TOOL_CALL_OUTPUT_TOKENS, find_marker,
    input_tokens_for_body_len, usage_json,
};

/// Which OpenAI API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/chat/completions`.
    Chat,
}

/// What the fake answers with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Text(String),
    /// A call of a function tool with JSON-encoded arguments.
    Call {
        name: String,
        arguments: String,
    },
}

/// What the fake learned from a request body.
#[derive(Debug)]
pub(crate) struct Request {
    pub model: String,
    pub stream: bool,
    /// Chat Completions `stream_options.include_usage`.
    pub include_usage: bool,
    pub reply: Reply,
    pub marker: Option<Result<Scenario, String>>,
}

/// The last turn of a conversation, as far as the fake cares.
#[derive(Default)]
struct LastTurn {
    /// Texts of the last user message (when the conversation ends with one).
    texts: Vec<String>,
    /// The text of a trailing tool result.
    tool_result: Option<String>,
}

impl LastTurn {
    /// The last text that is not a context block such as `<environment_context>...`.
    fn prompt(&self) -> Option<&str> {
        self.texts
            .iter()
            .rev()
            .find(|t| {
                let t = t.trim();
                !(t.starts_with('<') && t.ends_with('>'))
            })
            .map(String::as_str)
    }
}

/// Parses and validates a request body; `Err` is the message of a 400 `invalid_request_error`.
pub(crate) fn parse(body: &[u8], wire: Wire) -> Result<Request, String> {
    let top: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err("Invalid type for request body: expected an object.".into()),
        Err(e) => {
            return Err(format!(
                "We could not parse the JSON body of your request. (HINT: This likely means you \
                 aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.) \
                 {e}"
            ));
        }
    };
    let model = match top.get("model") {
        None | Some(Value::Null) => return Err("Missing required parameter: 'model'.".into()),
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err("Invalid type for 'model': expected a non-empty string.".into()),
    };
    let stream = match top.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("Invalid type for 'stream': expected a boolean.".into()),
    };
    let include_usage = top
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (turn, tools) = match wire {
        Wire::Responses => {
            let turn = match top.get("input") {
                Some(Value::String(s)) => LastTurn {
                    texts: vec![s.clone()],
                    tool_result: None,
                },
                Some(Value::Array(items)) => responses_last_turn(items),
                None | Some(Value::Null) => return Err("Missing required parameter: 'input'.".into()),
                Some(_) => return Err("Invalid type for 'input': expected a string or an array.".into()),
            };
            let tools: Vec<String> = array(&top, "tools")
                .iter()
                .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect();
            (turn, tools)
        }
        Wire::Chat => {
            let messages = match top.get("messages") {
                Some(Value::Array(m)) if !m.is_empty() => m,
                Some(Value::Array(_)) => {
                    return Err(
                        "Invalid 'messages': empty array. Expected an array with minimum length 1, \
                                but got an empty array instead."
                            .into(),
                    );
                }
                None | Some(Value::Null) => return Err("Missing required parameter: 'messages'.".into()),
                Some(_) => return Err("Invalid type for 'messages': expected an array.".into()),
            };
            let tools: Vec<String> = array(&top, "tools")
                .iter()
                .filter_map(|t| {
                    t.get("function")
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            (chat_last_turn(messages), tools)
        }
    };

    let reply = if let Some(result) = &turn.tool_result {
        Reply::Text(format!("Tool said: {}", server::shell_output(result)))
    } else if let (Some(cmd), Some(tool)) = (
        turn.prompt().and_then(echo_command),
        SHELL_TOOLS.iter().find(|s| tools.iter().any(|t| t == *s)),
    ) {
        let arguments = match *tool {
            "exec_command" => json!({"cmd": cmd}),
            "shell_command" => json!({"command": cmd}),
            _ => json!({"command": ["bash", "-lc", cmd]}),
        };
        Reply::Call {
            name: (*tool).to_owned(),
            arguments: arguments.to_string(),
        }
    } else {
        Reply::Text(DEFAULT_REPLY.to_owned())
    };
    let marker = turn.texts.iter().find_map(|t| find_marker(t));
    Ok(Request {
        model,
        stream,
        include_usage,
        reply,
        marker,
    })
}

fn array<'a>(top: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    top.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The text of a content value: a string, or the `text` of every part that has one.
fn content_texts(content: Option<&Value>) -> Vec<String> {
    match content {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn responses_last_turn(items: &[Value]) -> LastTurn {
    for item in items.iter().rev() {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        match kind {
            "function_call_output" | "custom_tool_call_output" | "local_shell_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    other => content_texts(other).join("\n"),
                };
                return LastTurn {
                    texts: Vec::new(),
                    tool_result: Some(output),
                };
            }
            "message" if item.get("role").and_then(Value::as_str) == Some("user") => {
                return LastTurn {
                    texts: content_texts(item.get("content")),
                    tool_result: None,
                };
            }
            _ => {}
        }
    }
    LastTurn::default()
}

fn chat_last_turn(messages: &[Value]) -> LastTurn {
    for message in messages.iter().rev() {
        match message.get("role").and_then(Value::as_str) {
            Some("tool") => {
                return LastTurn {
                    texts: Vec::new(),
                    tool_result: Some(content_texts(message.get("content")).join("\n")),
                };
            }
            Some("user") => {
                return LastTurn {
                    texts: content_texts(message.get("content")),
                    tool_result: None,
                };
            }
            _ => {}
        }
    }
    LastTurn::default()
}

/// Token counts of one reply.
struct Tokens {
    input: u64,
    cached: u64,
    output: u64,
    reasoning: u64,
}

impl Tokens {
    fn usage(&self, wire: Wire) -> Value {
        usage_json(wire, self.input, self.cached, self.output, self.reasoning)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Builds the answer to a valid request in a non-error scenario.
pub(crate) fn answer(
    ctx: &Ctx,
    request: &Request,
    body_len: usize,
    scenario: Option<Scenario>,
    wire: Wire,
) -> Answer {
    let input = input_tokens_for_body_len(body_len);
    let reasoning = if scenario == Some(Scenario::Reasoning) {
        REASONING_TOKENS
    } else {
        0
    };
    let visible = match &request.reply {
        Reply::Text(t) => t.split_whitespace().count() as u64,
        Reply::Call { .. } => TOOL_CALL_OUTPUT_TOKENS,
    };
    let tokens = Tokens {
        input,
        cached: if scenario == Some(Scenario::Cache) {
            input / 2
        } else {
            0
        },
        output: visible + reasoning,
        reasoning,
    };
    let shape = match scenario {
        Some(Scenario::Cut) => Shape::Cut,
        Some(Scenario::ErrorMidstream) => Shape::Error,
        _ => Shape::Complete,
    };
    let usage = (shape == Shape::Complete).then(|| tokens.usage(wire));
    let response = match (wire, request.stream) {
        (Wire::Responses, true) => server::sse_response(
            responses_events(ctx, request, &tokens, shape),
            shape == Shape::Cut,
        ),
        (Wire::Chat, true) => {
            server::sse_response(chat_events(ctx, request, &tokens, shape), shape == Shape::Cut)
        }
        (Wire::Responses, false) => {
            let value = responses_json(ctx, request, &tokens);
            if shape == Shape::Cut {
                return server::half_json_then_cut(&value).into();
            }
            json_response(StatusCode::OK, &value)
        }
        (Wire::Chat, false) => {
            let value = chat_json(ctx, request, &tokens);
            if shape == Shape::Cut {
                return server::half_json_then_cut(&value).into();
            }
            json_response(StatusCode::OK, &value)
        }
    };
    Answer { response, usage }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Complete,
    /// Stop after the first delta (the caller cuts the connection).
    Cut,
    /// Report an error after the first delta.
    Error,
}

fn responses_item(ctx: &Ctx, reply: &Reply, done: bool) -> Value {
    let status = if done { "completed" } else { "in_progress" };
    match reply {
        Reply::Text(text) => json!({
            "id": ctx.id("msg_"),
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": if done {
                json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": text}])
            } else {
                json!([])
            },
        }),
        Reply::Call { name, arguments } => json!({
            "id": ctx.id("fc_"),
            "type": "function_call",
            "status": status,
            "arguments": if done { arguments.as_str() } else { "" },
            "call_id": ctx.id("call_"),
            "name": name,
        }),
    }
}

fn responses_object(id: &str, model: &str, status: &str, output: Value, usage: Value) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": now(),
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    })
}

fn responses_json(ctx: &Ctx, request: &Request, tokens: &Tokens) -> Value {
    let item = responses_item(ctx, &request.reply, true);
    responses_object(
        &ctx.id("resp_"),
        &request.model,
        "completed",
        json!([item]),
        tokens.usage(Wire::Responses),
    )
}

/// `event: TYPE\ndata: JSON\n\n`, with `sequence_number` added.
fn event(seq: &mut u64, mut data: Value) -> Bytes {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    if let Some(map) = data.as_object_mut() {
        map.insert("sequence_number".into(), json!(*seq));
    }
    *seq += 1;
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

fn responses_events(ctx: &Ctx, request: &Request, tokens: &Tokens, shape: Shape) -> Vec<Bytes> {
    let id = ctx.id("resp_");
    let model = &request.model;
    let mut seq = 0;
    let mut out = Vec::new();
    let pending = responses_object(&id, model, "in_progress", json!([]), Value::Null);
    out.push(event(
        &mut seq,
        json!({"type": "response.created", "response": pending}),
    ));
    out.push(event(
        &mut seq,
        json!({"type": "response.in_progress", "response": pending}),
    ));

    let item = responses_item(ctx, &request.reply, false);
    let item_id = item["id"].clone();
    let mut done_item = item.clone();
    done_item["status"] = json!("completed");
    out.push(event(
        &mut seq,
        json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
    ));
    match &request.reply {
        Reply::Text(text) => {
            let part = |t: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": t});
            out.push(event(
                &mut seq,
                json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0,
                       "content_index": 0, "part": part("")}),
            ));
            let pieces = word_pieces(text);
            let n = if shape == Shape::Complete { pieces.len() } else { 1 };
            for piece in pieces.into_iter().take(n) {
                out.push(event(
                    &mut seq,
                    json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
                           "content_index": 0, "delta": piece, "logprobs": []}),
                ));
            }
            if shape == Shape::Complete {
                out.push(event(
                    &mut seq,
                    json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0,
                           "content_index": 0, "text": text, "logprobs": []}),
                ));
                out.push(event(
                    &mut seq,
                    json!({"type": "response.content_part.done", "item_id": item_id, "output_index": 0,
                           "content_index": 0, "part": part(text)}),
                ));
                done_item["content"] = json!([part(text)]);
            }
        }
        Reply::Call { arguments, .. } => {
            let pieces = byte_pieces(arguments);
            let n = if shape == Shape::Complete { pieces.len() } else { 1 };
            for piece in pieces.into_iter().take(n) {
                out.push(event(
                    &mut seq,
                    json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                           "output_index": 0, "delta": piece}),
                ));
            }
            if shape == Shape::Complete {
                out.push(event(
                    &mut seq,
                    json!({"type": "response.function_call_arguments.done", "item_id": item_id,
                           "output_index": 0, "arguments": arguments}),
                ));
                done_item["arguments"] = json!(arguments);
            }
        }
    }
    match shape {
        Shape::Cut => return out,
        Shape::Error => {
            let mut failed = responses_object(&id, model, "failed", json!([]), Value::Null);
            failed["error"] = json!({
                "code": "server_error",
                "message": "The server had an error while processing your request. Sorry about that!",
            });
            out.push(event(
                &mut seq,
                json!({"type": "response.failed", "response": failed}),
            ));
            return out;
        }
        Shape::Complete => {}
    }
    out.push(event(
        &mut seq,
        json!({"type": "response.output_item.done", "output_index": 0, "item": done_item}),
    ));
    let completed = responses_object(
        &id,
        model,
        "completed",
        json!([done_item]),
        tokens.usage(Wire::Responses),
    );
    out.push(event(
        &mut seq,
        json!({"type": "response.completed", "response": completed}),
    ));
    out
}

fn chat_json(ctx: &Ctx, request: &Request, tokens: &Tokens) -> Value {
    let (message, finish) = match &request.reply {
        Reply::Text(text) => (
            json!({"role": "assistant", "content": text, "refusal": null, "annotations": []}),
            "stop",
        ),
        Reply::Call { name, arguments } => (
            json!({"role": "assistant", "content": null, "refusal": null, "annotations": [],
                   "tool_calls": [{"id": ctx.id("call_"), "type": "function",
                                   "function": {"name": name, "arguments": arguments}}]}),
            "tool_calls",
        ),
    };
    json!({
        "id": ctx.id("chatcmpl-"),
        "object": "chat.completion",
        "created": now(),
        "model": request.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": tokens.usage(Wire::Chat),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    })
}

fn chat_events(ctx: &Ctx, request: &Request, tokens: &Tokens, shape: Shape) -> Vec<Bytes> {
    let id = ctx.id("chatcmpl-");
    let created = now();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": request.model,
            "service_tier": "default", "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if request.include_usage {
            c["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut out = Vec::new();
    let (deltas, finish) = match &request.reply {
        Reply::Text(text) => {
            out.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            let deltas: Vec<Value> = word_pieces(text)
                .into_iter()
                .map(|p| json!({"content": p}))
                .collect();
            (deltas, "stop")
        }
        Reply::Call { name, arguments } => {
            out.push(chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                       "id": ctx.id("call_"), "type": "function",
                       "function": {"name": name, "arguments": ""}}], "refusal": null}),
                Value::Null,
            ));
            let deltas: Vec<Value> = byte_pieces(arguments)
                .into_iter()
                .map(|p| json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
                .collect();
            (deltas, "tool_calls")
        }
    };
    let n = if shape == Shape::Complete { deltas.len() } else { 1 };
    for delta in deltas.into_iter().take(n) {
        out.push(chunk(delta, Value::Null));
    }
    match shape {
        Shape::Cut => return out,
        Shape::Error => {
            let error = json!({"error": {"message": "The server had an error while processing your request. \
                                                     Sorry about that!",
                                         "type": "server_error", "param": null, "code": null}});
            out.push(Bytes::from(format!("data: {error}\n\n")));
            return out;
        }
        Shape::Complete => {}
    }
    out.push(chunk(json!({}), json!(finish)));
    if request.include_usage {
        let usage = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": request.model,
            "service_tier": "default", "system_fingerprint": "fp_fake",
            "choices": [], "usage": tokens.usage(Wire::Chat),
        });
        out.push(Bytes::from(format!("data: {usage}\n\n")));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_tool_loop_bodies() {
        let ask = json!({"model": "gpt-5", "stream": true,
        "tools": [{"type": "function", "name": "exec_command"}, {"type": "web_search"}],
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text",
             "text": "<environment_context>\n<cwd>/x</cwd>\n</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text",
             "text": "run echo TOOL_OK [[scenario:cache]]"}]},
        ]});
        let req = parse(ask.to_string().as_bytes(), Wire::Responses).unwrap();
        assert_eq!(
            req.reply,
            Reply::Call {
                name: "exec_command".into(),
                arguments: r#"{"cmd":"echo TOOL_OK [[scenario:cache]]"}"#.into()
            }
        );
        assert_eq!(req.marker, Some(Ok(Scenario::Cache)));
        let result = json!({"model": "gpt-5", "input": [
            {"type": "message", "role": "user", "content": "run echo TOOL_OK [[scenario:cut]]"},
            {"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": "c"},
            {"type": "function_call_output", "call_id": "c",
             "output": "Chunk ID: 1\nProcess exited with code 0\nOutput:\nTOOL_OK\n"},
        ]});
        let req = parse(result.to_string().as_bytes(), Wire::Responses).unwrap();
        assert_eq!(req.reply, Reply::Text("Tool said: TOOL_OK".into()));
        assert_eq!(req.marker, None, "the marker of an earlier turn does not apply");
    }

    #[test]
    fn invalid_bodies() {
        for (body, wire, want) in [
            ("[]", Wire::Responses, "expected an object"),
            ("{", Wire::Responses, "could not parse"),
            (r#"{"input":"x"}"#, Wire::Responses, "'model'"),
            (r#"{"model":"m"}"#, Wire::Responses, "'input'"),
            (
                r#"{"model":"m","input":"x","stream":1}"#,
                Wire::Responses,
                "'stream'",
            ),
            (r#"{"model":"m","messages":[]}"#, Wire::Chat, "empty array"),
            (r#"{"model":"m"}"#, Wire::Chat, "'messages'"),
        ] {
            let err = parse(body.as_bytes(), wire).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }
}
