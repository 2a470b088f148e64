//! The fake OpenAI upstream, exercised over real HTTP, and the real Codex CLI against it.

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_tests::agents::{AgentRun, CodexOptions, codex_bin, run_codex_with};
use tollgate_tests::fake_openai::{
    DEFAULT_REPLY, FakeOpenAi, FakeOpenAiConfig, REASONING_TOKENS, RETRY_AFTER_SECS, Scenario,
    TOOL_CALL_OUTPUT_TOKENS, input_tokens_for_body_len,
};

const KEY: &str = "sk-openai-upstream-test";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn start() -> FakeOpenAi {
    FakeOpenAi::start(FakeOpenAiConfig::new(KEY)).await.unwrap()
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    /// The body, or the error that ended it (a cut connection).
    body: Result<Bytes, String>,
}

impl Reply {
    fn text(&self) -> &str {
        std::str::from_utf8(self.body.as_ref().expect("a complete body")).unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_str(self.text()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(
    fake: &FakeOpenAi,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", fake.base_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    Reply {
        status,
        headers,
        body,
    }
}

const AUTH: &str = "Bearer sk-openai-upstream-test";

async fn post(fake: &FakeOpenAi, path: &str, extra: &[(&str, &str)], body: &Value) -> Reply {
    let mut headers = vec![("authorization", AUTH), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    send(
        fake,
        Method::POST,
        path,
        &headers,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

fn responses_body(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-5", "stream": stream,
           "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]})
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-5", "stream": stream, "stream_options": {"include_usage": true},
           "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]})
}

fn len(body: &Value) -> usize {
    serde_json::to_vec(body).unwrap().len()
}

/// `event: NAME` / `data: JSON` pairs, checking that `data.type == NAME` and that
/// `sequence_number` counts from 0.
fn parse_events(body: &str) -> Vec<(String, Value)> {
    let events: Vec<(String, Value)> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let mut lines = event.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap().to_owned();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
            assert!(lines.next().is_none(), "{event}");
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect();
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i as u64);
    }
    events
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// The `data:` payloads of a chat stream (`[DONE]` kept as a string).
fn chat_chunks(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

#[tokio::test]
async fn responses_json_and_stream() {
    let fake = start().await;
    let body = responses_body("say hi", false);
    let r = post(&fake, "/v1/responses", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], DEFAULT_REPLY);
    let input = input_tokens_for_body_len(len(&body));
    assert_eq!(
        v["usage"],
        json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": input + 3})
    );
    let rec = fake.requests().pop().unwrap();
    assert_eq!(
        (rec.method.as_str(), rec.path.as_str()),
        ("POST", "/v1/responses")
    );
    assert_eq!(rec.header("authorization"), Some(AUTH));
    assert_eq!(rec.usage, Some(v["usage"].clone()));
    assert_eq!(rec.body_json(), Some(body));

    let body = responses_body("say hi", true);
    let r = post(&fake, "/v1/responses", &[], &body).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = parse_events(r.text());
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, DEFAULT_REPLY);
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], DEFAULT_REPLY);
    assert_eq!(done["id"], events[0].1["response"]["id"]);
    let input = input_tokens_for_body_len(len(&body));
    assert_eq!(done["usage"]["input_tokens"], input);
    assert_eq!(fake.requests().pop().unwrap().usage, Some(done["usage"].clone()));
}

#[tokio::test]
async fn responses_function_call_loop() {
    let fake = start().await;
    let mut body = responses_body("please run echo TOOL_OK", true);
    body["tools"] = json!([{"type": "function", "name": "exec_command", "parameters": {}},
                           {"type": "web_search"}]);
    let events = parse_events(post(&fake, "/v1/responses", &[], &body).await.text());
    assert_eq!(names(&events)[2], "response.output_item.added");
    let item = &events[2].1["item"];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "exec_command");
    assert_eq!(item["arguments"], "");
    let args: String = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, r#"{"cmd":"echo TOOL_OK"}"#);
    let done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], args.as_str());
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"][0]["call_id"], item["call_id"]);
    assert_eq!(completed["output"][0]["arguments"], args.as_str());
    assert_eq!(completed["usage"]["output_tokens"], TOOL_CALL_OUTPUT_TOKENS);

    // Without a shell tool the trigger is plain text.
    let plain = post(
        &fake,
        "/v1/responses",
        &[],
        &responses_body("run echo TOOL_OK", false),
    )
    .await;
    assert_eq!(plain.json()["output"][0]["content"][0]["text"], DEFAULT_REPLY);

    let mut follow = body.clone();
    follow["input"].as_array_mut().unwrap().extend([
        json!({"type": "function_call", "name": "exec_command", "arguments": args, "call_id": item["call_id"]}),
        json!({"type": "function_call_output", "call_id": item["call_id"],
               "output": "Chunk ID: 1\nWall time: 0.01 seconds\nProcess exited with code 0\nOutput:\nTOOL_OK\n"}),
    ]);
    follow["stream"] = json!(false);
    let r = post(&fake, "/v1/responses", &[], &follow).await;
    assert_eq!(r.json()["output"][0]["content"][0]["text"], "Tool said: TOOL_OK");
}

#[tokio::test]
async fn chat_completions_json_and_stream() {
    let fake = start().await;
    let body = chat_body("say hi", false);
    let v = post(&fake, "/v1/chat/completions", &[], &body).await.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], DEFAULT_REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let input = input_tokens_for_body_len(len(&body));
    assert_eq!(v["usage"]["prompt_tokens"], input);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], input + 3);

    let body = chat_body("say hi", true);
    let chunks = chat_chunks(post(&fake, "/v1/chat/completions", &[], &body).await.text());
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"]["prompt_tokens"],
        input_tokens_for_body_len(len(&body))
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[..chunks.len() - 2]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, DEFAULT_REPLY);
    assert_eq!(chunks[chunks.len() - 3]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[..chunks.len() - 2].iter().all(|c| c["usage"].is_null()));

    // Without include_usage: no usage chunk, no usage field.
    let mut body = chat_body("run echo hi there", true);
    body.as_object_mut().unwrap().remove("stream_options");
    body["tools"] = json!([{"type": "function", "function": {"name": "shell", "parameters": {}}}]);
    let chunks = chat_chunks(post(&fake, "/v1/chat/completions", &[], &body).await.text());
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "{chunks:?}");
    let call = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "shell");
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"command":["bash","-lc","echo hi there"]}"#);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );

    let follow = json!({"model": "gpt-5", "messages": [
        {"role": "user", "content": "run echo hi there"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
         "function": {"name": "shell", "arguments": args}}]},
        {"role": "tool", "tool_call_id": "c", "content": "hi there\n"}]});
    let v = post(&fake, "/v1/chat/completions", &[], &follow).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Tool said: hi there");
}

fn assert_error(r: &Reply, status: u16, kind: &str, code: Option<&str>) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert_eq!(v["error"]["code"].as_str(), code, "{v}");
    assert!(v["error"]["param"].is_null());
    v["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn auth_and_validation_errors() {
    let fake = start().await;
    let body = serde_json::to_vec(&responses_body("hi", false)).unwrap();
    let r = send(&fake, Method::POST, "/v1/responses", &[], body.clone()).await;
    assert!(assert_error(&r, 401, "invalid_request_error", None).contains("didn't provide an API key"));
    let r = send(
        &fake,
        Method::POST,
        "/v1/responses",
        &[("authorization", "Bearer sk-wrong-key")],
        body,
    )
    .await;
    assert!(assert_error(&r, 401, "invalid_request_error", Some("invalid_api_key")).contains("sk-w****-key"));
    let r = send(
        &fake,
        Method::GET,
        "/v1/models",
        &[("x-api-key", KEY)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 401);

    let r = post(&fake, "/v1/responses", &[], &json!({"input": "x"})).await;
    assert!(assert_error(&r, 400, "invalid_request_error", None).contains("'model'"));
    let r = post(
        &fake,
        "/v1/chat/completions",
        &[],
        &json!({"model": "m", "messages": []}),
    )
    .await;
    assert_error(&r, 400, "invalid_request_error", None);
    let r = post(&fake, "/v1/nope", &[], &json!({})).await;
    assert_error(&r, 404, "invalid_request_error", None);
    let r = post(
        &fake,
        "/v1/responses",
        &[("x-fake-scenario", "nope")],
        &responses_body("hi", false),
    )
    .await;
    assert!(assert_error(&r, 400, "invalid_request_error", None).contains("unknown scenario"));

    let r = send(
        &fake,
        Method::GET,
        "/v1/models",
        &[("authorization", AUTH)],
        Vec::new(),
    )
    .await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert!(v["data"].as_array().unwrap().iter().any(|m| m["id"] == "gpt-5"));
    let r = send(
        &fake,
        Method::GET,
        "/v1/models/gpt-5",
        &[("authorization", AUTH)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.json()["id"], "gpt-5");
    let r = send(
        &fake,
        Method::GET,
        "/v1/models/nope",
        &[("authorization", AUTH)],
        Vec::new(),
    )
    .await;
    assert_error(&r, 404, "invalid_request_error", Some("model_not_found"));
}

#[tokio::test]
async fn status_scenarios() {
    let fake = start().await;
    for (scenario, status, kind, code) in [
        (Scenario::Status(400), 400, "invalid_request_error", None),
        (
            Scenario::Status(401),
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        (
            Scenario::Status(403),
            403,
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
        ),
        (
            Scenario::Status(404),
            404,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        (Scenario::Status(413), 413, "invalid_request_error", None),
        (
            Scenario::Status(429),
            429,
            "requests",
            Some("rate_limit_exceeded"),
        ),
        (
            Scenario::Status429NoRetryAfter,
            429,
            "requests",
            Some("rate_limit_exceeded"),
        ),
        (
            Scenario::InsufficientQuota,
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        (Scenario::Status(500), 500, "server_error", None),
        (Scenario::Status(502), 502, "server_error", Some("bad_gateway")),
        (Scenario::Status(503), 503, "server_error", None),
        (Scenario::Status(529), 529, "server_error", None),
        (Scenario::ErrorMidstream, 500, "server_error", None),
    ] {
        // By header, and by marker, on both APIs.
        let name = scenario.name();
        for r in [
            post(
                &fake,
                "/v1/responses",
                &[("x-fake-scenario", &name)],
                &responses_body("hi", false),
            )
            .await,
            post(
                &fake,
                "/v1/chat/completions",
                &[],
                &chat_body(&format!("hi {}", scenario.marker()), false),
            )
            .await,
        ] {
            let message = assert_error(&r, status, kind, code);
            let hinted = scenario == Scenario::Status(429);
            assert_eq!(r.header("retry-after").is_some(), hinted, "{name}");
            assert_eq!(
                r.header("x-ratelimit-remaining-requests").is_some(),
                hinted,
                "{name}"
            );
            if hinted {
                assert_eq!(
                    r.header("retry-after"),
                    Some(RETRY_AFTER_SECS.to_string().as_str())
                );
                assert!(message.contains("Please try again in 7s"), "{message}");
            }
        }
    }
    assert!(fake.requests().iter().all(|r| r.usage.is_none()));
}

#[tokio::test]
async fn cut_and_error_midstream() {
    let fake = start().await;
    let cut = Scenario::Cut.marker();
    let r = post(
        &fake,
        "/v1/responses",
        &[],
        &responses_body(&format!("hi {cut}"), true),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_err(), "the stream must end abruptly");
    let r = post(
        &fake,
        "/v1/chat/completions",
        &[],
        &chat_body(&format!("hi {cut}"), true),
    )
    .await;
    assert!(r.body.is_err());
    let r = post(
        &fake,
        "/v1/responses",
        &[],
        &responses_body(&format!("hi {cut}"), false),
    )
    .await;
    assert!(r.body.is_err());
    assert!(fake.requests().iter().all(|r| r.usage.is_none()));

    let failing = Scenario::ErrorMidstream.marker();
    let r = post(
        &fake,
        "/v1/responses",
        &[],
        &responses_body(&format!("hi {failing}"), true),
    )
    .await;
    let events = parse_events(r.text());
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.failed",
        ]
    );
    assert_eq!(events[5].1["response"]["error"]["code"], "server_error");
    let chunks = chat_chunks(
        post(&fake, "/v1/chat/completions", &[], &chat_body(&failing, true))
            .await
            .text(),
    );
    assert_eq!(chunks.last().unwrap()["error"]["type"], "server_error");
    assert!(!chunks.contains(&json!("[DONE]")));
}

#[tokio::test]
async fn cache_and_reasoning_usage() {
    let fake = start().await;
    let body = responses_body(&Scenario::Cache.marker(), false);
    let usage = post(&fake, "/v1/responses", &[], &body).await.json()["usage"].clone();
    let input = input_tokens_for_body_len(len(&body));
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], input / 2);
    let body = chat_body(&Scenario::Reasoning.marker(), false);
    let usage = post(&fake, "/v1/chat/completions", &[], &body).await.json()["usage"].clone();
    assert_eq!(
        usage["completion_tokens_details"]["reasoning_tokens"],
        REASONING_TOKENS
    );
    assert_eq!(usage["completion_tokens"], 3 + REASONING_TOKENS);
}

#[tokio::test]
async fn control_endpoints() {
    let fake = start().await;
    post(&fake, "/v1/responses", &[], &responses_body("hi", false)).await;
    let r = send(&fake, Method::GET, "/_fake/requests", &[], Vec::new()).await;
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["path"], "/v1/responses");
    let r = send(&fake, Method::POST, "/_fake/clear", &[], Vec::new()).await;
    assert_eq!(r.json()["cleared"], 1);
    assert!(fake.requests().is_empty());
}

// ---- The real Codex CLI against the fake, no gateway ----

fn codex_env(fake: &FakeOpenAi) -> (String, &'static str) {
    (format!("{}/v1", fake.base_url()), KEY)
}

async fn codex(fake: &FakeOpenAi, prompt: &str, options: CodexOptions) -> Option<AgentRun> {
    let bin = codex_bin()?;
    let (base, key) = codex_env(fake);
    let prompt = prompt.to_owned();
    Some(
        tokio::task::spawn_blocking(move || {
            run_codex_with(
                &bin,
                &prompt,
                &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", key)],
                None,
                &options,
            )
        })
        .await
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_says_hi_and_completes_a_tool_loop() {
    let fake = start().await;
    let Some(run) = codex(&fake, "say hi", CodexOptions::no_retries()).await else {
        return;
    };
    assert!(run.success(), "{}", run.output());
    assert_eq!(run.final_text(), DEFAULT_REPLY, "{}", run.output());
    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let first = &requests[0];
    assert_eq!(first.path, "/v1/responses");
    assert_eq!(first.header("authorization"), Some(AUTH));
    assert_eq!(first.header("originator"), Some("codex_exec"));
    assert!(
        first
            .header("user-agent")
            .unwrap()
            .starts_with("codex_exec/0.171.0")
    );
    let session = first.header("session-id").expect("session-id").to_owned();
    assert_eq!(first.header("thread-id"), Some(session.as_str()));
    assert!(first.header("x-codex-turn-metadata").unwrap().contains(&session));
    let body = first.body_json().unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "gpt-5");
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"exec_command"), "{tools:?}");

    fake.clear();
    let run = codex(&fake, "run echo TOOL_OK", CodexOptions::no_retries())
        .await
        .unwrap();
    assert!(run.success(), "{}", run.output());
    assert_eq!(run.final_text(), "Tool said: TOOL_OK", "{}", run.output());
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let follow = requests[1].body_json().unwrap();
    let last = follow["input"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "function_call_output", "{last}");
    assert_eq!(requests[1].header("session-id"), requests[0].header("session-id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_reports_a_failed_request() {
    let fake = start().await;
    let prompt = format!("say hi {}", Scenario::Status(400).marker());
    let Some(run) = codex(&fake, &prompt, CodexOptions::no_retries()).await else {
        return;
    };
    assert!(!run.success(), "{}", run.output());
    assert!(
        run.stderr.contains("fake-openai scenario status-400"),
        "{}",
        run.output()
    );
    assert_eq!(fake.requests().len(), 1);
}

// ---- Measurement: how Codex CLI retries (run with `--ignored --nocapture`) ----

/// The scenarios measured for `e2e/captures/README.md`.
const MEASURED: [Scenario; 15] = [
    Scenario::Status(400),
    Scenario::Status(401),
    Scenario::Status(403),
    Scenario::Status(404),
    Scenario::Status(413),
    Scenario::Status(429),
    Scenario::Status429NoRetryAfter,
    Scenario::InsufficientQuota,
    Scenario::Status(500),
    Scenario::Status(502),
    Scenario::Status(503),
    Scenario::Status(504),
    Scenario::Status(529),
    Scenario::Cut,
    Scenario::ErrorMidstream,
];

/// Runs `codex exec` with Codex's default retry settings against one fake per scenario (all at
/// once), noting when each request arrives; prints one JSON line per scenario and writes them to
/// `e2e/captures/codex-retries.jsonl`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, minutes long"]
async fn measure_codex_retries() {
    let Some(bin) = codex_bin() else {
        return;
    };
    let mut tasks = Vec::new();
    for scenario in MEASURED {
        let bin = bin.clone();
        tasks.push(tokio::spawn(async move {
            let fake = start().await;
            let (base, key) = codex_env(&fake);
            let prompt = format!("say hi {}", scenario.marker());
            let options = CodexOptions {
                timeout: std::time::Duration::from_secs(420),
                ..CodexOptions::default()
            };
            let started = std::time::Instant::now();
            let run = tokio::task::spawn_blocking(move || {
                run_codex_with(
                    &bin,
                    &prompt,
                    &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", key)],
                    None,
                    &options,
                )
            });
            let mut seen = Vec::new();
            while !run.is_finished() {
                let n = fake.requests().len();
                while seen.len() < n {
                    seen.push(started.elapsed().as_millis() as u64);
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let run = run.await.unwrap();
            let requests = fake.requests();
            let tail: Vec<&str> = run
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .rev()
                .take(4)
                .collect();
            json!({
                "cli": "codex", "scenario": scenario.name(), "attempts": requests.len(),
                "arrivals_ms": seen, "exit": run.code, "elapsed_ms": run.elapsed.as_millis() as u64,
                "timed_out": run.timed_out, "final": run.final_text(),
                "stderr_tail": tail.into_iter().rev().collect::<Vec<_>>(),
                "paths": requests.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
            })
        }));
    }
    let mut lines = Vec::new();
    for t in tasks {
        let line = t.await.unwrap();
        println!("{line}");
        lines.push(line.to_string());
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/captures/codex-retries.jsonl");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(out, lines.join("\n") + "\n").unwrap();
}
