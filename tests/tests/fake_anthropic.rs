//! The fake Anthropic upstream, exercised over real HTTP.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tollgate_tests::fake_anthropic::{
    BIG_REPLY_BYTES, DEFAULT_REPLY, FakeAnthropic, FakeConfig, HUGE_REPLY_BYTES, PROMPT_TOO_LONG,
    RecordedRequest, Scenario, TOOL_USE_OUTPUT_TOKENS, big_reply_text, expected_usage,
    input_tokens_for_body_len,
};

const KEY: &str = "sk-ant-upstream-test";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start() -> FakeAnthropic {
    start_with(FakeConfig::new(KEY)).await
}

async fn start_with(config: FakeConfig) -> FakeAnthropic {
    FakeAnthropic::start(config).await.unwrap()
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

fn api_headers() -> Vec<(&'static str, String)> {
    vec![
        ("x-api-key", KEY.to_owned()),
        ("anthropic-version", "2023-06-01".to_owned()),
        ("content-type", "application/json".to_owned()),
    ]
}

async fn send(
    client: &HttpClient,
    fake: &FakeAnthropic,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path_and_query}", fake.base_url()));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn post_messages(
    client: &HttpClient,
    fake: &FakeAnthropic,
    extra: &[(&str, &str)],
    body: &Value,
) -> Reply {
    let mut headers = api_headers();
    headers.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    send(
        client,
        fake,
        Method::POST,
        "/v1/messages?beta=true",
        &headers,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

fn simple_body(text: &str, stream: bool) -> Value {
    json!({
        "model": "claude-opus-4-8",
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
}

fn body_len(body: &Value) -> usize {
    serde_json::to_vec(body).unwrap().len()
}

/// Parses an SSE body, asserting that every event is `event: NAME` + `data: JSON` with
/// `data.type == NAME`.
fn parse_sse(body: &str) -> Vec<(String, Value)> {
    assert!(body.ends_with("\n\n"), "SSE body must end with a blank line");
    body.strip_suffix("\n\n")
        .unwrap()
        .split("\n\n")
        .map(|event| {
            let mut lines = event.lines();
            let name = lines
                .next()
                .and_then(|l| l.strip_prefix("event: "))
                .unwrap_or_else(|| panic!("event line missing in {event:?}"));
            let data = lines
                .next()
                .and_then(|l| l.strip_prefix("data: "))
                .unwrap_or_else(|| panic!("data line missing in {event:?}"));
            assert!(lines.next().is_none(), "extra lines in {event:?}");
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name, "event name and data.type differ");
            (name.to_owned(), data)
        })
        .collect()
}

/// What a complete stream carried.
struct Streamed {
    message_start: Value,
    blocks: Vec<Value>,
    text: String,
    partial_json: String,
    stop_reason: String,
    usage: Value,
    pings: usize,
    deltas: usize,
}

/// Checks the standard event sequence and folds it.
fn fold_stream(events: &[(String, Value)]) -> Streamed {
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    let non_ping: Vec<&str> = names.iter().copied().filter(|n| *n != "ping").collect();
    assert_eq!(non_ping[non_ping.len() - 2], "message_delta", "{names:?}");
    let mut out = Streamed {
        message_start: events[0].1["message"].clone(),
        blocks: Vec::new(),
        text: String::new(),
        partial_json: String::new(),
        stop_reason: String::new(),
        usage: events[0].1["message"]["usage"].clone(),
        pings: 0,
        deltas: 0,
    };
    let mut open: Option<u64> = None;
    for (name, data) in events {
        match name.as_str() {
            "ping" => out.pings += 1,
            "content_block_start" => {
                assert!(open.is_none());
                open = Some(data["index"].as_u64().unwrap());
                out.blocks.push(data["content_block"].clone());
            }
            "content_block_delta" => {
                assert_eq!(open, data["index"].as_u64());
                out.deltas += 1;
                match data["delta"]["type"].as_str().unwrap() {
                    "text_delta" => out.text.push_str(data["delta"]["text"].as_str().unwrap()),
                    "input_json_delta" => out
                        .partial_json
                        .push_str(data["delta"]["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(open.take(), data["index"].as_u64());
            }
            "message_delta" => {
                out.stop_reason = data["delta"]["stop_reason"].as_str().unwrap().to_owned();
                // Cumulative: overwrite every non-null field.
                for (k, v) in data["usage"].as_object().unwrap() {
                    if !v.is_null() {
                        out.usage[k] = v.clone();
                    }
                }
            }
            "message_start" | "message_stop" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(open.is_none());
    out
}

fn last(fake: &FakeAnthropic) -> RecordedRequest {
    fake.requests().pop().expect("a recorded request")
}

fn assert_error(reply: &Reply, status: u16, kind: &str) -> String {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let v = reply.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], kind);
    let request_id = v["request_id"].as_str().unwrap();
    assert!(request_id.starts_with("req_"));
    assert_eq!(reply.header("request-id"), Some(request_id));
    v["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn non_streaming_message() {
    let fake = start().await;
    let c = client();
    let body = simple_body("say hi", false);
    let r = post_messages(&c, &fake, &[], &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("content-length").is_some());
    let request_id = r.header("request-id").unwrap().to_owned();
    assert!(request_id.starts_with("req_"));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-opus-4-8");
    assert_eq!(v["content"], json!([{"type": "text", "text": DEFAULT_REPLY}]));
    assert_eq!(v["stop_reason"], "end_turn");
    let usage = &v["usage"];
    assert_eq!(usage["input_tokens"], input_tokens_for_body_len(body_len(&body)));
    assert_eq!(usage["output_tokens"], 3);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_creation"]["ephemeral_5m_input_tokens"], 0);
    assert_eq!(*usage, expected_usage(body_len(&body), false, 3));

    let rec = last(&fake);
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/v1/messages");
    assert_eq!(rec.query.as_deref(), Some("beta=true"));
    assert_eq!(rec.header("X-API-KEY"), Some(KEY));
    assert_eq!(rec.body_json().unwrap(), body);
    assert_eq!(rec.response_status, 200);
    assert_eq!(rec.usage.as_ref(), Some(usage));
    assert_eq!(rec.request_id, request_id);
}

#[tokio::test]
async fn streaming_message_is_well_formed() {
    let fake = start().await;
    let c = client();
    let mut body = simple_body("say hi", true);
    body["model"] = json!("claude-sonnet-4-6");
    let r = post_messages(&c, &fake, &[], &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream; charset=utf-8"));
    assert!(r.header("request-id").unwrap().starts_with("req_"));
    assert!(r.header("content-length").is_none(), "SSE is chunked");
    let events = parse_sse(r.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let s = fold_stream(&events);
    assert!(s.message_start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(s.message_start["model"], "claude-sonnet-4-6");
    let start_usage = &s.message_start["usage"];
    assert_eq!(start_usage["output_tokens"], 1);
    for field in [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ] {
        assert!(start_usage[field].is_u64(), "{field}");
    }
    assert!(start_usage["cache_creation"]["ephemeral_1h_input_tokens"].is_u64());
    assert_eq!(s.blocks, [json!({"type": "text", "text": ""})]);
    assert_eq!(s.text, DEFAULT_REPLY);
    assert_eq!(s.stop_reason, "end_turn");
    let delta_usage = &events[7].1["usage"];
    assert_eq!(delta_usage["output_tokens"], 3);
    assert_eq!(
        delta_usage["input_tokens"],
        input_tokens_for_body_len(body_len(&body))
    );
    assert_eq!(s.usage, expected_usage(body_len(&body), false, 3));
    assert_eq!(last(&fake).usage, Some(s.usage));
}

#[tokio::test]
async fn auth_and_version_errors() {
    let fake = start().await;
    let c = client();
    let body = serde_json::to_vec(&simple_body("hi", false)).unwrap();
    let version = ("anthropic-version", "2023-06-01".to_owned());

    let r = send(
        &c,
        &fake,
        Method::POST,
        "/v1/messages",
        &[("x-api-key", "wrong".to_owned()), version.clone()],
        body.clone(),
    )
    .await;
    assert_eq!(assert_error(&r, 401, "authentication_error"), "invalid x-api-key");

    // A bearer token is not the provider key.
    let r = send(
        &c,
        &fake,
        Method::POST,
        "/v1/messages",
        &[("authorization", format!("Bearer {KEY}")), version.clone()],
        body.clone(),
    )
    .await;
    assert_error(&r, 401, "authentication_error");

    let r = send(
        &c,
        &fake,
        Method::POST,
        "/v1/messages",
        &[("x-api-key", KEY.to_owned())],
        body.clone(),
    )
    .await;
    assert!(assert_error(&r, 400, "invalid_request_error").contains("anthropic-version"));

    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.response_status).collect();
    assert_eq!(statuses, [401, 401, 400]);
    assert!(fake.requests().iter().all(|r| r.usage.is_none()));
}

#[tokio::test]
async fn body_validation_names_the_problem() {
    let fake = start().await;
    let c = client();
    let cases: [(&str, &str); 9] = [
        ("{not json", "error parsing the body"),
        ("[1,2]", "JSON object"),
        (
            r#"{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#,
            "model",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (r#"{"model":"m","max_tokens":1}"#, "messages"),
        (r#"{"model":"m","max_tokens":1,"messages":[]}"#, "messages"),
        (r#"{"model":"m","max_tokens":1,"messages":"x"}"#, "messages"),
        (
            r#"{"model":5,"max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#,
            "model",
        ),
        (
            r#"{"model":"m","max_tokens":1,"stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
            "stream",
        ),
    ];
    for (body, needle) in cases {
        let r = send(&c, &fake, Method::POST, "/v1/messages", &api_headers(), body).await;
        let message = assert_error(&r, 400, "invalid_request_error");
        assert!(message.contains(needle), "{body}: {message}");
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The bodies of the two `/v1/messages` calls of the captured Claude Code tool loop.
fn tool_loop_bodies() -> (Value, Value) {
    let text = std::fs::read_to_string(fixture("claude-code-tool-loop.jsonl")).unwrap();
    let mut bodies = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["path"] == "/v1/messages")
        .map(|r| r["body"].clone());
    (bodies.next().unwrap(), bodies.next().unwrap())
}

#[tokio::test]
async fn claude_code_tool_loop() {
    let fake = start().await;
    let c = client();
    let (mut first, mut second) = tool_loop_bodies();

    // Turn 1: a system-reminder block, the prompt, and a trailing system-reminder.
    let content = first["messages"][0]["content"].as_array_mut().unwrap();
    content[0]["text"] = json!("<system-reminder>\nAs you answer, run echo TOOL_OK? no.\n</system-reminder>");
    content[1]["text"] = json!("run echo TOOL_OK");
    content.push(json!({"type": "text", "text": "<system-reminder>ignore</system-reminder>"}));
    let r = post_messages(&c, &fake, &[], &first).await;
    assert_eq!(r.status, 200);
    let events = parse_sse(r.text());
    let s = fold_stream(&events);
    assert_eq!(s.blocks.len(), 1);
    let block = &s.blocks[0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "Bash");
    assert_eq!(block["input"], json!({}));
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(s.stop_reason, "tool_use");
    let input: Value = serde_json::from_str(&s.partial_json).unwrap();
    assert_eq!(
        input,
        json!({"command": "echo TOOL_OK", "description": "Print TOOL_OK"})
    );
    // The input arrives in several chunks, some of them splitting a string.
    let chunks: Vec<&str> = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert!(chunks.len() > 3);
    assert!(
        chunks
            .iter()
            .any(|c| c.matches('"').count() % 2 == 1 && c.len() > 2)
    );
    assert_eq!(s.usage["output_tokens"], TOOL_USE_OUTPUT_TOKENS);
    assert_eq!(
        s.usage,
        expected_usage(body_len(&first), false, TOOL_USE_OUTPUT_TOKENS)
    );

    // The same prompt without a Bash tool is just chat.
    let mut no_tools = first.clone();
    no_tools["tools"] = json!([{"name": "Read", "input_schema": {"type": "object"}}]);
    let r = post_messages(&c, &fake, &[], &no_tools).await;
    assert_eq!(fold_stream(&parse_sse(r.text())).text, DEFAULT_REPLY);

    // Turn 2: the tool_result (string content).
    let messages = second["messages"].as_array_mut().unwrap();
    let result = messages.last_mut().unwrap()["content"][0]
        .as_object_mut()
        .unwrap();
    assert_eq!(result["type"], "tool_result");
    result.insert("content".into(), json!("TOOL_OK\n"));
    let r = post_messages(&c, &fake, &[], &second).await;
    let s = fold_stream(&parse_sse(r.text()));
    assert_eq!(s.text, "Tool said: TOOL_OK");
    assert_eq!(s.stop_reason, "end_turn");
    assert_eq!(s.usage["output_tokens"], 3);

    // tool_result with an array of text blocks, non-streaming, plus a trailing reminder.
    let messages = second["messages"].as_array_mut().unwrap();
    let last_content = messages.last_mut().unwrap()["content"].as_array_mut().unwrap();
    last_content[0]["content"] = json!([{"type": "text", "text": "  TOOL_OK  "}]);
    last_content.push(json!({"type": "text", "text": "<system-reminder>x</system-reminder>"}));
    second["stream"] = json!(false);
    let r = post_messages(&c, &fake, &[], &second).await;
    assert_eq!(r.json()["content"][0]["text"], "Tool said: TOOL_OK");

    // Non-streaming tool_use.
    first["stream"] = json!(false);
    let v = post_messages(&c, &fake, &[], &first).await.json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["input"]["command"], "echo TOOL_OK");
}

#[tokio::test]
async fn realistic_claude_code_body() {
    let fake = start().await;
    let c = client();
    let body = std::fs::read(fixture("messages-request-claude-code.json")).unwrap();
    let r = send(
        &c,
        &fake,
        Method::POST,
        "/v1/messages?beta=true",
        &api_headers(),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    let s = fold_stream(&parse_sse(r.text()));
    assert_eq!(s.text, DEFAULT_REPLY);
    assert_eq!(s.usage["input_tokens"], (body.len() / 4) as u64);
    assert_eq!(last(&fake).body.len(), body.len());
}

#[tokio::test]
async fn status_scenarios() {
    let fake = start().await;
    let c = client();
    let body = simple_body("hi", true);

    let r = post_messages(&c, &fake, &[("x-fake-scenario", "status-400")], &body).await;
    assert_eq!(assert_error(&r, 400, "invalid_request_error"), PROMPT_TOO_LONG);

    let r = post_messages(&c, &fake, &[("x-fake-scenario", "status-429")], &body).await;
    assert_error(&r, 429, "rate_limit_error");
    assert_eq!(r.header("retry-after"), Some("7"));
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        assert!(r.header(&format!("anthropic-ratelimit-{kind}-limit")).is_some());
        assert_eq!(
            r.header(&format!("anthropic-ratelimit-{kind}-remaining")),
            Some("0")
        );
        let reset = r.header(&format!("anthropic-ratelimit-{kind}-reset")).unwrap();
        assert!(
            reset.len() == 20 && reset.ends_with('Z') && &reset[10..11] == "T",
            "{reset}"
        );
    }

    let r = post_messages(&c, &fake, &[("x-fake-scenario", "status-500")], &body).await;
    assert_error(&r, 500, "api_error");

    // Selected by a marker in the prompt instead of the header.
    let marked = simple_body(&format!("hi {}", Scenario::Status529.marker()), true);
    let r = post_messages(&c, &fake, &[], &marked).await;
    assert_eq!(assert_error(&r, 529, "overloaded_error"), "Overloaded");

    // The header wins over the marker.
    let r = post_messages(&c, &fake, &[("x-fake-scenario", "status-500")], &marked).await;
    assert_error(&r, 500, "api_error");

    // Unknown names are reported, not ignored.
    let r = post_messages(&c, &fake, &[("x-fake-scenario", "nope")], &body).await;
    assert!(assert_error(&r, 400, "invalid_request_error").contains("nope"));
    let r = post_messages(&c, &fake, &[], &simple_body("[[scenario:nope]]", true)).await;
    assert_error(&r, 400, "invalid_request_error");

    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.response_status).collect();
    assert_eq!(statuses, [400, 429, 500, 529, 500, 400, 400]);
    assert!(fake.requests().iter().all(|r| r.usage.is_none()));
}

#[tokio::test]
async fn error_midstream() {
    let fake = start().await;
    let c = client();
    let body = simple_body("hi [[scenario:error-midstream]]", true);
    let r = post_messages(&c, &fake, &[], &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream; charset=utf-8"));
    let events = parse_sse(r.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[4].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    let rec = last(&fake);
    assert_eq!(rec.response_status, 200);
    assert_eq!(rec.usage.unwrap()["output_tokens"], 1);

    // Non-streaming: the error becomes a 529.
    let r = post_messages(
        &c,
        &fake,
        &[("x-fake-scenario", "error-midstream")],
        &simple_body("hi", false),
    )
    .await;
    assert_error(&r, 529, "overloaded_error");
}

#[tokio::test]
async fn cut_closes_the_connection_midstream() {
    let fake = start().await;
    let c = client();
    for stream in [true, false] {
        let body = serde_json::to_vec(&simple_body("hi", stream)).unwrap();
        let mut req =
            Request::post(format!("{}/v1/messages", fake.base_url())).header("x-fake-scenario", "cut");
        for (k, v) in api_headers() {
            req = req.header(k, v);
        }
        let resp = c
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut received = Vec::new();
        let error = loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        received.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        assert!(error.is_some(), "the body must end in an error");
        let text = String::from_utf8(received).unwrap();
        if stream {
            let events = parse_sse(&text);
            let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                [
                    "message_start",
                    "ping",
                    "content_block_start",
                    "content_block_delta"
                ]
            );
        } else {
            assert!(serde_json::from_str::<Value>(&text).is_err());
        }
    }
    // The fake keeps serving.
    let r = post_messages(&c, &fake, &[], &simple_body("hi", false)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn slow_drips_events_with_extra_pings() {
    let delay = Duration::from_millis(15);
    let fake = start_with(FakeConfig {
        drip_delay: delay,
        ..FakeConfig::new(KEY)
    })
    .await;
    let c = client();
    let mut req = Request::post(format!("{}/v1/messages", fake.base_url())).header("x-fake-scenario", "slow");
    for (k, v) in api_headers() {
        req = req.header(k, v);
    }
    let body = serde_json::to_vec(&simple_body("hi", true)).unwrap();
    let t0 = Instant::now();
    let resp = c
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut frames = 0;
    let mut first_frame = None;
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        first_frame.get_or_insert_with(|| t0.elapsed());
        frames += 1;
        text.extend_from_slice(&data);
    }
    let total = t0.elapsed();
    let events = parse_sse(std::str::from_utf8(&text).unwrap());
    let s = fold_stream(&events);
    assert_eq!(s.text, DEFAULT_REPLY);
    assert_eq!(s.pings, 1 + s.deltas);
    assert!(frames >= events.len() / 2, "events arrive one by one");
    let gaps = events.len() as u32 - 1;
    assert!(
        total >= delay * gaps,
        "{total:?} < {gaps} x {delay:?} for {} events",
        events.len()
    );
    assert!(first_frame.unwrap() < delay * gaps / 2);
}

#[tokio::test]
async fn a_held_slow_stream_waits_after_its_first_event_until_released() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let fake = start_with(FakeConfig {
        drip_delay: Duration::from_millis(1),
        hold: Some(gate.clone()),
        ..FakeConfig::new(KEY)
    })
    .await;
    let mut req = Request::post(format!("{}/v1/messages", fake.base_url())).header("x-fake-scenario", "slow");
    for (k, v) in api_headers() {
        req = req.header(k, v);
    }
    let body = serde_json::to_vec(&simple_body("hi", true)).unwrap();
    let resp = client()
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("event: message_start"), "{first}");
    gate.add_permits(1);
    let rest = body.collect().await.unwrap().to_bytes();
    let events = parse_sse(&format!("{first}{}", String::from_utf8_lossy(&rest)));
    assert_eq!(fold_stream(&events).text, DEFAULT_REPLY);
    assert_eq!(gate.available_permits(), 0, "the release was consumed");
}

#[tokio::test]
async fn cache_usage() {
    let fake = start().await;
    let c = client();
    for stream in [false, true] {
        let body = simple_body("hello there [[scenario:cache]]", stream);
        let r = post_messages(&c, &fake, &[], &body).await;
        assert_eq!(r.status, 200);
        let usage = if stream {
            fold_stream(&parse_sse(r.text())).usage
        } else {
            r.json()["usage"].clone()
        };
        let total = input_tokens_for_body_len(body_len(&body));
        let n = |k: &str| usage[k].as_u64().unwrap();
        let c5 = usage["cache_creation"]["ephemeral_5m_input_tokens"]
            .as_u64()
            .unwrap();
        let c1 = usage["cache_creation"]["ephemeral_1h_input_tokens"]
            .as_u64()
            .unwrap();
        assert!(n("cache_read_input_tokens") > 0 && c5 > 0 && c1 > 0 && n("input_tokens") > 0);
        assert_eq!(n("cache_creation_input_tokens"), c5 + c1);
        assert_eq!(
            n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens"),
            total
        );
        assert_eq!(usage, expected_usage(body_len(&body), true, 3));
        assert_eq!(last(&fake).usage, Some(usage));
    }
}

#[tokio::test]
async fn big_reply() {
    let fake = start().await;
    let c = client();
    let body = simple_body("hi", true);
    let r = post_messages(&c, &fake, &[("x-fake-scenario", "big")], &body).await;
    assert_eq!(r.status, 200);
    let s = fold_stream(&parse_sse(r.text()));
    assert!(s.text.len() >= BIG_REPLY_BYTES - 100, "{}", s.text.len());
    assert!(s.text.starts_with("BIG_REPLY_BEGIN") && s.text.ends_with("BIG_REPLY_END"));
    assert_eq!(s.text, big_reply_text());
    assert!(s.deltas > 1000, "{} deltas", s.deltas);
    let words = s.text.split_whitespace().count() as u64;
    assert_eq!(s.usage["output_tokens"], words);

    let r = post_messages(
        &c,
        &fake,
        &[("x-fake-scenario", "big")],
        &simple_body("hi", false),
    )
    .await;
    let v = r.json();
    assert_eq!(v["content"][0]["text"], big_reply_text());
    assert_eq!(v["usage"]["output_tokens"], words);
}

#[tokio::test]
async fn big_cut_delivers_every_block_then_cuts_before_the_final_usage() {
    let fake = start().await;
    let body = serde_json::to_vec(&simple_body("hi", true)).unwrap();
    let mut req =
        Request::post(format!("{}/v1/messages", fake.base_url())).header("x-fake-scenario", "big-cut");
    for (k, v) in api_headers() {
        req = req.header(k, v);
    }
    let resp = client()
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap_or_default()),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert!(error.is_some(), "the body must end in an error");
    let events = parse_sse(std::str::from_utf8(&received).unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names.last(),
        Some(&"content_block_stop"),
        "no message_delta, no message_stop"
    );
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, big_reply_text());
    assert_eq!(
        last(&fake).usage.unwrap()["output_tokens"],
        1,
        "as message_start said"
    );
}

#[tokio::test]
async fn big_with_a_tool_marker_writes_then_calls_the_tool() {
    let fake = start().await;
    let c = client();
    let body = simple_body("[[tool_use:Lookup]]", true);
    let r = post_messages(&c, &fake, &[("x-fake-scenario", "big")], &body).await;
    let s = fold_stream(&parse_sse(r.text()));
    assert_eq!(s.text, big_reply_text());
    assert_eq!(s.blocks.len(), 2);
    assert_eq!(s.blocks[1]["name"], "Lookup");
    assert_eq!(s.partial_json, "{}");
    assert_eq!(s.stop_reason, "tool_use");
    let words = big_reply_text().split_whitespace().count() as u64;
    assert_eq!(s.usage["output_tokens"], words + TOOL_USE_OUTPUT_TOKENS);
}

#[tokio::test]
async fn slow_headers_and_huge_json() {
    let fake = start_with(FakeConfig {
        header_delay: Duration::from_millis(300),
        ..FakeConfig::new(KEY)
    })
    .await;
    let c = client();
    let t0 = Instant::now();
    let r = post_messages(
        &c,
        &fake,
        &[("x-fake-scenario", "slow-headers")],
        &simple_body("hi", false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300), "{:?}", t0.elapsed());
    assert_eq!(r.json()["content"][0]["text"], DEFAULT_REPLY);

    let r = post_messages(
        &c,
        &fake,
        &[("x-fake-scenario", "huge-json")],
        &simple_body("hi", false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.len() > HUGE_REPLY_BYTES, "{}", r.body.len());
    let v = r.json();
    let text = v["content"][0]["text"].as_str().unwrap();
    assert!(text.len() >= HUGE_REPLY_BYTES);
    assert_eq!(
        v["usage"]["output_tokens"],
        text.split_whitespace().count() as u64
    );
}

#[tokio::test]
async fn other_endpoints() {
    let fake = start().await;
    let c = client();

    for path in ["/", "/api/hello"] {
        let r = send(&c, &fake, Method::HEAD, path, &[], Bytes::new()).await;
        assert_eq!(r.status, 200, "HEAD {path}");
    }

    let body = serde_json::to_vec(&json!({
        "model": "claude-opus-4-8",
        "messages": [{"role": "user", "content": "count me"}],
    }))
    .unwrap();
    let r = send(
        &c,
        &fake,
        Method::POST,
        "/v1/messages/count_tokens?beta=true",
        &api_headers(),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!({"input_tokens": body.len() / 4}));
    let r = send(
        &c,
        &fake,
        Method::POST,
        "/v1/messages/count_tokens",
        &[("anthropic-version", "2023-06-01".to_owned())],
        body,
    )
    .await;
    assert_error(&r, 401, "authentication_error");

    let r = send(
        &c,
        &fake,
        Method::GET,
        "/v1/models?limit=1000",
        &api_headers(),
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "claude-opus-4-8");
    assert!(ids.iter().any(|id| id.contains("sonnet")));
    assert!(ids.iter().any(|id| id.contains("haiku")));
    assert_eq!(v["data"][0]["display_name"], "Claude Opus 4.8");
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["created_at"], "2026-01-01T00:00:00Z");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], ids[0]);
    assert_eq!(v["last_id"], *ids.last().unwrap());

    let r = send(
        &c,
        &fake,
        Method::GET,
        "/v1/models/claude-opus-4-8",
        &api_headers(),
        Bytes::new(),
    )
    .await;
    assert_eq!(r.json()["id"], "claude-opus-4-8");

    for (method, path) in [
        (Method::GET, "/v1/messages"),
        (Method::POST, "/v1/complete"),
        (Method::GET, "/nope"),
    ] {
        let r = send(&c, &fake, method, path, &api_headers(), Bytes::new()).await;
        assert_error(&r, 404, "not_found_error");
    }
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 9);
    assert_eq!(paths[0], "/");
}

#[tokio::test]
async fn recording_is_bounded_and_clearable() {
    let fake = start_with(FakeConfig {
        max_recorded: 3,
        ..FakeConfig::new(KEY)
    })
    .await;
    let c = client();
    for i in 0..5 {
        post_messages(&c, &fake, &[], &simple_body(&format!("n{i}"), false)).await;
    }
    let texts: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| {
            r.body_json().unwrap()["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["n2", "n3", "n4"]);
    fake.clear();
    assert!(fake.requests().is_empty());

    let off = start_with(FakeConfig {
        record: false,
        ..FakeConfig::new(KEY)
    })
    .await;
    let r = post_messages(&c, &off, &[], &simple_body("hi", false)).await;
    assert_eq!(r.status, 200);
    assert!(off.requests().is_empty());
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let fake = start_with(FakeConfig {
        record: false,
        ..FakeConfig::new(KEY)
    })
    .await;
    let stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = Bytes::from(serde_json::to_vec(&simple_body("hi", true)).unwrap());
    let t0 = Instant::now();
    for _ in 0..500 {
        let mut req = Request::post("/v1/messages?beta=true").header("host", "fake");
        for (k, v) in api_headers() {
            req = req.header(k, v);
        }
        sender.ready().await.unwrap();
        let resp = sender
            .send_request(req.body(Full::new(body.clone())).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(text.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// Kills the child process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_and_exposes_control_endpoints() {
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_fake-anthropic"))
            .args(["--listen", "127.0.0.1:0", "--api-key", KEY])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);
    let base = format!("http://{addr}");
    let c = client();

    let req = |method: Method, path: &str, body: Vec<u8>, auth: bool| {
        let mut b = Request::builder().method(method).uri(format!("{base}{path}"));
        if auth {
            for (k, v) in api_headers() {
                b = b.header(k, v);
            }
        }
        b.body(Full::new(Bytes::from(body))).unwrap()
    };
    let sent = serde_json::to_vec(&simple_body("héllo", false)).unwrap();
    let resp = c
        .request(req(Method::POST, "/v1/messages?beta=true", sent.clone(), true))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reply: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();

    let resp = c
        .request(req(Method::GET, "/_fake/requests", vec![], false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let raw: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(raw[0]["body"].is_string(), "body is a UTF-8 string");
    let recorded: Vec<RecordedRequest> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/messages");
    assert_eq!(recorded[0].query.as_deref(), Some("beta=true"));
    assert_eq!(recorded[0].body, Bytes::from(sent));
    assert_eq!(recorded[0].usage.as_ref(), Some(&reply["usage"]));

    let resp = c
        .request(req(Method::POST, "/_fake/clear", vec![], false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .request(req(Method::GET, "/_fake/requests", vec![], false))
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"[]");
}

#[test]
fn binary_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_fake-anthropic"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-key"));
}

/// Rough throughput of the fake (client and server in one process):
/// `cargo test --release -p tollgate-tests --test fake_anthropic throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "manual measurement"]
async fn throughput() {
    let fake = start_with(FakeConfig {
        record: false,
        ..FakeConfig::new(KEY)
    })
    .await;
    let body = Bytes::from(std::fs::read(fixture("messages-request-claude-code.json")).unwrap());
    let per_conn = 2000;
    let conns = 8;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let addr = fake.addr();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            for _ in 0..per_conn {
                let mut req = Request::post("/v1/messages?beta=true").header("host", "fake");
                for (k, v) in api_headers() {
                    req = req.header(k, v);
                }
                sender.ready().await.unwrap();
                let resp = sender
                    .send_request(req.body(Full::new(body.clone())).unwrap())
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = per_conn * conns;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{n} streamed requests with a {} KB body in {secs:.2} s: {:.0} req/s",
        body.len() / 1024,
        n as f64 / secs
    );
}

// ---- Bedrock mode -------------------------------------------------------------------------

const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const BEDROCK_LABEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0";

/// A SigV4-shaped `authorization` and `x-amz-date` (the fake checks their presence only).
fn bedrock_headers() -> Vec<(&'static str, String)> {
    vec![
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/bedrock/aws4_request, \
             SignedHeaders=accept;content-type;host;x-amz-date, Signature=00"
                .to_owned(),
        ),
        ("x-amz-date", "20260101T000000Z".to_owned()),
        ("content-type", "application/json".to_owned()),
    ]
}

/// `body` as Bedrock's InvokeModel body: no `model`, no `stream`, plus `anthropic_version`.
fn bedrock_body(body: &Value) -> Value {
    let mut b = body.clone();
    let obj = b.as_object_mut().unwrap();
    obj.remove("model");
    obj.remove("stream");
    obj.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
    b
}

async fn post_bedrock(
    client: &HttpClient,
    fake: &FakeAnthropic,
    stream: bool,
    headers: &[(&str, String)],
    body: &Value,
) -> Reply {
    let op = if stream {
        "invoke-with-response-stream"
    } else {
        "invoke"
    };
    send(
        client,
        fake,
        Method::POST,
        &format!("/model/{BEDROCK_LABEL}/{op}"),
        headers,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// Decodes an AWS event stream with the dataplane's own decoder (fed in uneven pieces) into the
/// Anthropic events of its `chunk` messages, checking every message's headers and payload shape.
fn decode_bedrock_stream(body: &[u8]) -> Vec<(String, Value)> {
    use base64::Engine as _;
    use tollgate_dataplane::providers::bedrock::eventstream::Decoder;

    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for piece in body.chunks(37) {
        decoder.feed(piece);
        while let Some(msg) = decoder.next_message().expect("a valid event stream") {
            assert_eq!(msg.header_str(":message-type"), Some("event"));
            assert_eq!(msg.header_str(":event-type"), Some("chunk"));
            assert_eq!(msg.header_str(":content-type"), Some("application/json"));
            let payload: Value = serde_json::from_slice(&msg.payload).unwrap();
            let keys: Vec<&String> = payload.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["bytes", "p"], "{payload}");
            let json = base64::engine::general_purpose::STANDARD
                .decode(payload["bytes"].as_str().unwrap())
                .unwrap();
            let event: Value = serde_json::from_slice(&json).unwrap();
            events.push((event["type"].as_str().unwrap().to_owned(), event));
        }
    }
    assert_eq!(decoder.pending(), 0, "the stream ends on a message boundary");
    events
}

/// What differs legitimately between the two paths: ids, the model, the input tokens (the
/// bodies differ in length) and Bedrock's invocation metrics.
fn normalized(mut events: Vec<(String, Value)>) -> Vec<(String, Value)> {
    for (_, e) in &mut events {
        if let Some(m) = e.get_mut("message") {
            m["id"] = json!("ID");
            m["model"] = json!("MODEL");
            m["usage"]["input_tokens"] = json!(0);
        }
        if let Some(u) = e.get_mut("usage") {
            u["input_tokens"] = json!(0);
        }
        if let Some(b) = e.get_mut("content_block").filter(|b| b.get("id").is_some()) {
            b["id"] = json!("ID");
        }
        if let Some(obj) = e.as_object_mut() {
            obj.remove("amazon-bedrock-invocationMetrics");
        }
    }
    events
}

#[tokio::test]
async fn bedrock_stream_carries_the_sse_events_as_an_aws_event_stream() {
    let fake = start().await;
    let c = client();
    for prompt in [
        "Hello there",
        "Read it [[tool_use:Read:{\"file_path\":\"/tmp/x\"}]]",
    ] {
        let body = simple_body(prompt, true);
        let sse = post_messages(&c, &fake, &[], &body).await;
        assert_eq!(sse.status, 200);
        let sse_events = parse_sse(sse.text());

        let bedrock = bedrock_body(&body);
        let r = post_bedrock(&c, &fake, true, &bedrock_headers(), &bedrock).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.amazon.eventstream")
        );
        assert!(r.header("x-amzn-requestid").is_some());
        let events = decode_bedrock_stream(&r.body);

        // The same events, pings dropped.
        let without_pings: Vec<(String, Value)> = sse_events
            .iter()
            .filter(|(name, _)| name != "ping")
            .cloned()
            .collect();
        assert_eq!(normalized(events.clone()), normalized(without_pings), "{prompt}");

        // What legitimately differs.
        let input = (body_len(&bedrock) / 4) as u64;
        let start = &events[0].1["message"];
        assert_eq!(start["model"], BEDROCK_MODEL);
        assert!(start["id"].as_str().unwrap().starts_with("msg_bdrk_"));
        assert_eq!(start["usage"]["input_tokens"], input);
        let stop = &events.last().unwrap().1;
        assert_eq!(stop["type"], "message_stop");
        let metrics = &stop["amazon-bedrock-invocationMetrics"];
        assert_eq!(metrics["inputTokenCount"], input);
        let delta = &events[events.len() - 2].1;
        assert_eq!(metrics["outputTokenCount"], delta["usage"]["output_tokens"]);
        let rec = last(&fake);
        assert_eq!(
            rec.path,
            format!("/model/{BEDROCK_LABEL}/invoke-with-response-stream")
        );
        assert_eq!(rec.response_status, 200);
        assert_eq!(rec.usage.as_ref().unwrap()["input_tokens"], input);
    }
}

#[tokio::test]
async fn bedrock_json_answer_and_refusals() {
    let fake = start().await;
    let c = client();
    let body = simple_body("Hello there", false);
    let json_reply = post_messages(&c, &fake, &[], &body).await.json();

    // No x-api-key needed; the usual message, the model id from the path.
    let bedrock = bedrock_body(&body);
    let r = post_bedrock(&c, &fake, false, &bedrock_headers(), &bedrock).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!(m["model"], BEDROCK_MODEL);
    assert_eq!(m["content"], json_reply["content"]);
    assert_eq!(m["stop_reason"], json_reply["stop_reason"]);
    let input = (body_len(&bedrock) / 4) as u64;
    assert_eq!(m["usage"]["input_tokens"], input);
    assert_eq!(
        r.header("x-amzn-bedrock-input-token-count"),
        Some(input.to_string().as_str())
    );
    assert_eq!(
        r.header("x-amzn-bedrock-output-token-count"),
        Some(m["usage"]["output_tokens"].to_string().as_str())
    );

    // The streamed variant of a realistic body works too.
    let fixture_body: Value =
        serde_json::from_slice(&std::fs::read(fixture("messages-request-claude-code.json")).unwrap())
            .unwrap();
    let r = post_bedrock(&c, &fake, true, &bedrock_headers(), &bedrock_body(&fixture_body)).await;
    assert_eq!(r.status, 200);
    let events = decode_bedrock_stream(&r.body);
    assert_eq!(events.last().unwrap().0, "message_stop");

    // Authentication: shape only, 401 without it (an x-api-key does not help).
    let aws_error = |r: &Reply, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert!(
            r.header("x-amzn-errortype")
                .unwrap()
                .starts_with(&format!("{kind}:")),
            "{:?}",
            r.header("x-amzn-errortype")
        );
        r.json()["message"].as_str().unwrap().to_owned()
    };
    let mut no_date = bedrock_headers();
    no_date.retain(|(k, _)| *k != "x-amz-date");
    let mut bearer = bedrock_headers();
    bearer[0].1 = "Bearer abc".into();
    for headers in [api_headers(), no_date, bearer] {
        let r = post_bedrock(&c, &fake, false, &headers, &bedrock).await;
        aws_error(&r, 401, "UnrecognizedClientException");
    }

    // The body as Bedrock checks it.
    for (bad, expect) in [
        (body.clone(), "extraneous key [model]"),
        (
            {
                let mut b = bedrock.clone();
                b["stream"] = json!(false);
                b
            },
            "extraneous key [stream]",
        ),
        (
            {
                let mut b = bedrock.clone();
                b.as_object_mut().unwrap().remove("anthropic_version");
                b
            },
            "required key [anthropic_version]",
        ),
        (
            {
                let mut b = bedrock.clone();
                b["anthropic_version"] = json!("2023-06-01");
                b
            },
            "Invalid API version",
        ),
        (
            {
                let mut b = bedrock.clone();
                b.as_object_mut().unwrap().remove("max_tokens");
                b
            },
            "required key [max_tokens]",
        ),
        (
            {
                let mut b = bedrock.clone();
                b["anthropic_beta"] = json!("x");
                b
            },
            "anthropic_beta",
        ),
        (json!([1, 2]), "JSONObject"),
    ] {
        let r = post_bedrock(&c, &fake, false, &bedrock_headers(), &bad).await;
        let message = aws_error(&r, 400, "ValidationException");
        assert!(message.contains(expect), "{message} / {expect}");
    }
    let r = send(
        &c,
        &fake,
        Method::POST,
        "/model/x/invoke",
        &bedrock_headers(),
        &b"{not json"[..],
    )
    .await;
    aws_error(&r, 400, "ValidationException");
    let r = send(
        &c,
        &fake,
        Method::POST,
        &format!("/model/{BEDROCK_LABEL}/converse"),
        &bedrock_headers(),
        serde_json::to_vec(&bedrock).unwrap(),
    )
    .await;
    aws_error(&r, 404, "UnknownOperationException");
    let r = send(
        &c,
        &fake,
        Method::POST,
        "/model/bad%zz/invoke",
        &bedrock_headers(),
        serde_json::to_vec(&bedrock).unwrap(),
    )
    .await;
    aws_error(&r, 400, "ValidationException");

    // Garbage never breaks the fake: every answer is a Bedrock error, on a live connection.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = serde_json::to_vec(&bedrock).unwrap();
    for round in 0..200 {
        let mut garbage: Vec<u8> = match round % 2 {
            0 => (0..next() % 300).map(|_| next() as u8).collect(),
            _ => valid[..(next() as usize % valid.len())].to_vec(),
        };
        if round % 4 == 3 {
            garbage = valid.clone();
            let at = next() as usize % garbage.len();
            garbage[at] = next() as u8;
        }
        let label: String = (0..1 + next() % 12)
            .map(|_| ['%', 'a', 'F', '3', '.', ':', '~', 'z'][(next() % 8) as usize])
            .collect();
        let r = send(
            &c,
            &fake,
            Method::POST,
            &format!("/model/{label}/invoke-with-response-stream"),
            &bedrock_headers(),
            garbage,
        )
        .await;
        assert!(r.status == 200 || r.status == 400, "{} {}", r.status, r.text());
    }
}
