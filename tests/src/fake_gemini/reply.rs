//! Parsing of `generateContent` request bodies and the fake's `GenerateContentResponse`s (JSON,
//! SSE, and the streamed JSON array).

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::{
    DEFAULT_REPLY, SHELL_TOOL, THOUGHTS_TOKENS, TOOL_CALL_OUTPUT_TOKENS, error_json,
    prompt_tokens_for_body_len,
};
use crate::fake_openai::server::{
    self, Answer, Ctx, echo_command, half_json_then_cut, json_response, word_pieces,
};
use crate::fake_openai::{Scenario, find_marker};

/// What the fake answers with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Text(String),
    /// A `functionCall` part.
    Call {
        name: String,
        args: Value,
    },
}

/// What the fake learned from a request body.
#[derive(Debug)]
pub(crate) struct Request {
    pub reply: Reply,
    pub marker: Option<Result<Scenario, String>>,
}

/// Parses and validates a body; `Err` is the message of a 400 `INVALID_ARGUMENT`. For
/// `countTokens`, `contents` may be missing (a `generateContentRequest` is accepted instead).
pub(crate) fn parse(body: &[u8], count_tokens: bool) -> Result<Request, String> {
    let top: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(
                "Invalid JSON payload received. Unknown name \"\": Root element must be a message.".into(),
            );
        }
        Err(e) => return Err(format!("Invalid JSON payload received. {e}")),
    };
    let top = match (count_tokens, top.get("generateContentRequest")) {
        (true, Some(Value::Object(inner))) => inner.clone(),
        _ => top,
    };
    let contents = match top.get("contents") {
        Some(Value::Array(c)) if !c.is_empty() => c.as_slice(),
        None | Some(Value::Null) if count_tokens => &[],
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err("* GenerateContentRequest.contents: contents is not specified\n".into());
        }
        Some(_) => {
            return Err(
                "Invalid JSON payload received. Unknown name \"contents\": Proto field is not repeating, \
                 cannot start list."
                    .into(),
            );
        }
    };
    for content in contents {
        if !content.get("parts").is_some_and(Value::is_array) {
            return Err(
                "* GenerateContentRequest.contents.parts: contents.parts must not be empty.\n".into(),
            );
        }
    }

    let last = contents.last();
    let last_is_user = last
        .and_then(|c| c.get("role"))
        .and_then(Value::as_str)
        .is_none_or(|r| r == "user");
    let parts: &[Value] = last
        .filter(|_| last_is_user)
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    let function_response = parts
        .iter()
        .rev()
        .find_map(|p| p.get("functionResponse").or_else(|| p.get("function_response")));
    let tools: Vec<&str> = top
        .get("tools")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .flat_map(|t| {
            t.get("functionDeclarations")
                .or_else(|| t.get("function_declarations"))
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice)
        })
        .filter_map(|f| f.get("name").and_then(Value::as_str))
        .collect();
    let prompt = texts
        .iter()
        .rev()
        .find(|t| {
            let t = t.trim();
            !(t.starts_with('<') && t.ends_with('>'))
        })
        .copied();

    let reply = if let Some(response) = function_response {
        let result = response.get("response");
        let text = match result.and_then(|r| r.get("output")) {
            Some(Value::String(s)) => s.clone(),
            _ => result.map(Value::to_string).unwrap_or_default(),
        };
        Reply::Text(format!("Tool said: {}", server::shell_output(&text)))
    } else if let (Some(cmd), true) = (prompt.and_then(echo_command), tools.contains(&SHELL_TOOL)) {
        Reply::Call {
            name: SHELL_TOOL.to_owned(),
            args: json!({"command": cmd, "description": format!("Run `{cmd}`.")}),
        }
    } else if let Some(schema) = json_schema(&top) {
        Reply::Text(schema_instance(schema, 0).to_string())
    } else {
        Reply::Text(DEFAULT_REPLY.to_owned())
    };
    Ok(Request {
        reply,
        marker: texts.iter().find_map(|t| find_marker(t)),
    })
}

/// The response schema of a request asking for JSON output, if any.
fn json_schema(top: &Map<String, Value>) -> Option<&Value> {
    let config = top.get("generationConfig")?;
    if config.get("responseMimeType").and_then(Value::as_str) != Some("application/json") {
        return None;
    }
    config
        .get("responseJsonSchema")
        .or_else(|| config.get("responseSchema"))
}

/// A deterministic instance of a (JSON or OpenAPI-style) schema.
fn schema_instance(schema: &Value, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_ascii_lowercase();
    match kind.as_str() {
        "string" => json!("fake"),
        "integer" | "number" => json!(1),
        "boolean" => json!(false),
        "array" => match schema.get("items") {
            Some(items) => json!([schema_instance(items, depth + 1)]),
            None => json!([]),
        },
        "null" => Value::Null,
        _ => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    out.insert(name.clone(), schema_instance(sub, depth + 1));
                }
            }
            Value::Object(out)
        }
    }
}

/// Token counts of one reply.
struct Tokens {
    prompt: u64,
    cached: u64,
    candidates: u64,
    thoughts: u64,
}

impl Tokens {
    /// `usageMetadata` with `candidates` candidate tokens so far.
    fn usage(&self, candidates: u64, last: bool) -> Value {
        let thoughts = if last { self.thoughts } else { 0 };
        let mut usage = json!({
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": self.prompt + candidates + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt}],
        });
        if self.cached > 0 {
            usage["cachedContentTokenCount"] = json!(self.cached);
            usage["cacheTokensDetails"] = json!([{"modality": "TEXT", "tokenCount": self.cached}]);
        }
        if thoughts > 0 {
            usage["thoughtsTokenCount"] = json!(thoughts);
        }
        usage
    }
}

/// Builds the answer to a valid `generateContent` / `streamGenerateContent` request in a
/// non-error scenario.
pub(crate) fn answer(
    ctx: &Ctx,
    request: &Request,
    model: &str,
    body_len: usize,
    scenario: Option<Scenario>,
    stream: bool,
    sse: bool,
) -> Answer {
    let prompt = prompt_tokens_for_body_len(body_len);
    let tokens = Tokens {
        prompt,
        cached: if scenario == Some(Scenario::Cache) {
            prompt / 2
        } else {
            0
        },
        candidates: match &request.reply {
            Reply::Text(t) => t.split_whitespace().count() as u64,
            Reply::Call { .. } => TOOL_CALL_OUTPUT_TOKENS,
        },
        thoughts: if scenario == Some(Scenario::Reasoning) {
            THOUGHTS_TOKENS
        } else {
            0
        },
    };
    let response_id = ctx.id("");
    let chunk = |parts: Value, finish: bool, usage: Value| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if finish {
            candidate["finishReason"] = json!("STOP");
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": response_id,
        })
    };
    let cut = scenario == Some(Scenario::Cut);
    let failing = scenario == Some(Scenario::ErrorMidstream);

    if !stream {
        let parts = match &request.reply {
            Reply::Text(t) => json!([{"text": t}]),
            Reply::Call { name, args } => json!([{"functionCall": {"name": name, "args": args}}]),
        };
        let value = chunk(parts, true, tokens.usage(tokens.candidates, true));
        if cut {
            return half_json_then_cut(&value).into();
        }
        return Answer {
            response: json_response(StatusCode::OK, &value),
            usage: Some(tokens.usage(tokens.candidates, true)),
        };
    }

    let mut chunks: Vec<Value> = Vec::new();
    match &request.reply {
        Reply::Text(text) => {
            let pieces = word_pieces(text);
            let n = pieces.len();
            let mut so_far = 0;
            for (i, piece) in pieces.into_iter().enumerate() {
                so_far += piece.split_whitespace().count() as u64;
                let last = i + 1 == n;
                chunks.push(chunk(json!([{"text": piece}]), last, tokens.usage(so_far, last)));
            }
        }
        Reply::Call { name, args } => chunks.push(chunk(
            json!([{"functionCall": {"name": name, "args": args}}]),
            true,
            tokens.usage(tokens.candidates, true),
        )),
    }
    if cut || failing {
        chunks.truncate(1);
        if let Some(only) = chunks.first_mut() {
            // An unfinished first chunk: no finishReason, no final usage.
            if let Some(c) = only["candidates"][0].as_object_mut() {
                c.remove("finishReason");
            }
            only["usageMetadata"] = json!({"promptTokenCount": tokens.prompt,
                                           "totalTokenCount": tokens.prompt});
        }
    }
    let usage = (!cut && !failing).then(|| tokens.usage(tokens.candidates, true));
    let mut events: Vec<Bytes> = Vec::with_capacity(chunks.len() + 2);
    if sse {
        for c in &chunks {
            events.push(Bytes::from(format!("data: {c}\r\n\r\n")));
        }
        if failing {
            let e = error_json(500, "INTERNAL", "An internal error has occurred.", Vec::new());
            events.push(Bytes::from(format!("data: {e}\r\n\r\n")));
        }
    } else {
        // Without alt=sse the API streams one JSON array of responses.
        for (i, c) in chunks.iter().enumerate() {
            let sep = if i == 0 { "[" } else { ",\r\n" };
            events.push(Bytes::from(format!("{sep}{c}")));
        }
        if failing {
            let e = error_json(500, "INTERNAL", "An internal error has occurred.", Vec::new());
            events.push(Bytes::from(format!(",\r\n{e}")));
        }
        if !cut {
            events.push(Bytes::from_static(b"]"));
        }
    }
    let mut response = server::sse_response(events, cut);
    if !sse {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=UTF-8"),
        );
    }
    Answer { response, usage }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_cli_tool_loop_bodies() {
        let ask = json!({
            "contents": [{"role": "user", "parts": [{"text": "<session_context>\nx\n</session_context>"},
                                                    {"text": "run echo TOOL_OK"}]}],
            "tools": [{"functionDeclarations": [{"name": "read_file"}, {"name": "run_shell_command"}]}],
        });
        let req = parse(ask.to_string().as_bytes(), false).unwrap();
        assert_eq!(
            req.reply,
            Reply::Call {
                name: "run_shell_command".into(),
                args: json!({"command": "echo TOOL_OK", "description": "Run `echo TOOL_OK`."})
            }
        );
        let result = json!({"contents": [
            {"role": "user", "parts": [{"text": "run echo TOOL_OK [[scenario:cut]]"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "run_shell_command", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command", "response": {
                "output": "<untrusted_context>\nOutput: TOOL_OK\nProcess Group PGID: 1\n</untrusted_context>"}}}]},
        ]});
        let req = parse(result.to_string().as_bytes(), false).unwrap();
        assert_eq!(req.reply, Reply::Text("Tool said: TOOL_OK".into()));
        assert_eq!(req.marker, None);
    }

    #[test]
    fn json_schema_replies() {
        let router = json!({
            "contents": [{"role": "user", "parts": [{"text": "run echo TOOL_OK"}]}],
            "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {
                "type": "OBJECT",
                "properties": {"complexity_reasoning": {"type": "STRING"},
                               "complexity_score": {"type": "INTEGER"},
                               "next_speaker": {"type": "string", "enum": ["user", "model"]},
                               "list": {"type": "array", "items": {"type": "boolean"}}}}},
        });
        let req = parse(router.to_string().as_bytes(), false).unwrap();
        let Reply::Text(text) = req.reply else {
            panic!("{:?}", req.reply)
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"complexity_reasoning": "fake", "complexity_score": 1, "next_speaker": "user",
                   "list": [false]})
        );
    }

    #[test]
    fn invalid_bodies() {
        for (body, want) in [
            ("[]", "Root element"),
            ("{", "Invalid JSON"),
            ("{}", "contents is not specified"),
            (r#"{"contents":[]}"#, "contents is not specified"),
            (r#"{"contents":{}}"#, "not repeating"),
            (r#"{"contents":[{"role":"user"}]}"#, "parts"),
        ] {
            let err = parse(body.as_bytes(), false).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
        assert!(parse(b"{}", true).is_ok());
    }
}
