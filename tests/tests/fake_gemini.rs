//! The fake Gemini upstream, exercised over real HTTP, and the real Gemini CLI against it.

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_tests::agents::{AgentRun, gemini_bin, run_gemini};
use tollgate_tests::fake_gemini::{
    DEFAULT_REPLY, FakeGemini, FakeGeminiConfig, RETRY_DELAY_SECS, Scenario, THOUGHTS_TOKENS,
    TOOL_CALL_OUTPUT_TOKENS, prompt_tokens_for_body_len,
};

const KEY: &str = "AIza-gemini-upstream-test";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn start() -> FakeGemini {
    FakeGemini::start(FakeGeminiConfig::new(KEY)).await.unwrap()
}

struct Reply {
    status: u16,
    headers: HeaderMap,
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
    fake: &FakeGemini,
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

async fn post(fake: &FakeGemini, path: &str, extra: &[(&str, &str)], body: &Value) -> Reply {
    let mut headers = vec![("x-goog-api-key", KEY), ("content-type", "application/json")];
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

const GENERATE: &str = "/v1beta/models/gemini-2.5-pro:generateContent";
const STREAM: &str = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse";

fn body(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}],
           "systemInstruction": {"parts": [{"text": "be brief"}]},
           "generationConfig": {"temperature": 1}})
}

fn len(body: &Value) -> usize {
    serde_json::to_vec(body).unwrap().len()
}

/// The `data:` objects of an SSE body (events separated by `\r\n\r\n`).
fn sse_chunks(text: &str) -> Vec<Value> {
    text.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

fn chunk_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect()
}

#[tokio::test]
async fn generate_and_stream() {
    let fake = start().await;
    let b = body("say hi");
    let r = post(&fake, GENERATE, &[], &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], DEFAULT_REPLY);
    assert_eq!(v["candidates"][0]["content"]["role"], "model");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["modelVersion"], "gemini-2.5-pro");
    let prompt = prompt_tokens_for_body_len(len(&b));
    let usage = &v["usageMetadata"];
    assert_eq!(usage["promptTokenCount"], prompt);
    assert_eq!(usage["candidatesTokenCount"], 3);
    assert_eq!(usage["totalTokenCount"], prompt + 3);
    assert!(usage.get("cachedContentTokenCount").is_none());
    let rec = fake.requests().pop().unwrap();
    assert_eq!(rec.path, "/v1beta/models/gemini-2.5-pro:generateContent");
    assert_eq!(rec.usage.as_ref(), Some(usage));

    let r = post(&fake, STREAM, &[], &b).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let chunks = sse_chunks(r.text());
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunk_text(&chunks), DEFAULT_REPLY);
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(
        chunks[..2]
            .iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none())
    );
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 3);
    assert_eq!(
        fake.requests().pop().unwrap().usage.as_ref(),
        Some(&last["usageMetadata"])
    );
    assert_eq!(fake.requests().pop().unwrap().query.as_deref(), Some("alt=sse"));

    // Without alt=sse: one streamed JSON array.
    let r = post(
        &fake,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
        &[],
        &b,
    )
    .await;
    let array = r.json();
    assert_eq!(chunk_text(array.as_array().unwrap()), DEFAULT_REPLY);

    // The `key` query parameter, and countTokens.
    let r = send(
        &fake,
        Method::POST,
        &format!("/v1beta/models/gemini-2.5-pro:countTokens?key={KEY}"),
        &[],
        serde_json::to_vec(&b).unwrap(),
    )
    .await;
    assert_eq!(r.json()["totalTokens"], prompt);
}

#[tokio::test]
async fn function_call_loop_and_json_schema() {
    let fake = start().await;
    let mut b = body("run echo TOOL_OK");
    b["tools"] = json!([{"functionDeclarations": [{"name": "read_file"}, {"name": "run_shell_command"}]}]);
    let chunks = sse_chunks(post(&fake, STREAM, &[], &b).await.text());
    assert_eq!(chunks.len(), 1);
    let call = &chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "run_shell_command");
    assert_eq!(call["args"]["command"], "echo TOOL_OK");
    assert_eq!(
        chunks[0]["usageMetadata"]["candidatesTokenCount"],
        TOOL_CALL_OUTPUT_TOKENS
    );

    b["contents"].as_array_mut().unwrap().extend([
        json!({"role": "model", "parts": [{"functionCall": call}]}),
        json!({"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command",
               "response": {"output": "Output: TOOL_OK\nProcess Group PGID: 7"}}}]}),
    ]);
    let v = post(&fake, GENERATE, &[], &b).await.json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "Tool said: TOOL_OK"
    );

    let router = json!({"contents": [{"role": "user", "parts": [{"text": "say hi"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {
            "type": "OBJECT", "properties": {"complexity_reasoning": {"type": "STRING"},
                                             "complexity_score": {"type": "INTEGER"}}}}});
    let v = post(&fake, GENERATE, &[], &router).await.json();
    let text = v["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        parsed,
        json!({"complexity_reasoning": "fake", "complexity_score": 1})
    );
}

fn assert_error(r: &Reply, status: u16, kind: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["code"], status, "{v}");
    assert_eq!(v["error"]["status"], kind, "{v}");
    assert!(v["error"]["message"].is_string());
    v["error"].clone()
}

#[tokio::test]
async fn auth_routes_and_vertex() {
    let fake = start().await;
    let b = serde_json::to_vec(&body("hi")).unwrap();
    let r = send(&fake, Method::POST, GENERATE, &[], b.clone()).await;
    assert_error(&r, 403, "PERMISSION_DENIED");
    let r = send(
        &fake,
        Method::POST,
        GENERATE,
        &[("x-goog-api-key", "AIza-wrong")],
        b.clone(),
    )
    .await;
    let e = assert_error(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(e["details"][0]["reason"], "API_KEY_INVALID");
    let r = send(
        &fake,
        Method::POST,
        &format!("{GENERATE}?key=AIza-wrong"),
        &[],
        b.clone(),
    )
    .await;
    assert_error(&r, 400, "INVALID_ARGUMENT");
    let r = post(&fake, "/v1beta/models/gemini-2.5-pro:nope", &[], &body("hi")).await;
    assert_error(&r, 404, "NOT_FOUND");
    let r = post(&fake, GENERATE, &[], &json!({"contents": []})).await;
    assert_error(&r, 400, "INVALID_ARGUMENT");
    let r = post(&fake, GENERATE, &[("x-fake-scenario", "nope")], &body("hi")).await;
    assert_error(&r, 400, "INVALID_ARGUMENT");

    let vertex = "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro";
    let bearer = format!("Bearer {KEY}");
    let r = send(
        &fake,
        Method::POST,
        &format!("{vertex}:generateContent"),
        &[("authorization", &bearer)],
        b.clone(),
    )
    .await;
    assert_eq!(
        r.json()["candidates"][0]["content"]["parts"][0]["text"],
        DEFAULT_REPLY
    );
    let r = send(
        &fake,
        Method::POST,
        &format!("{vertex}:streamGenerateContent?alt=sse"),
        &[("authorization", &bearer)],
        b.clone(),
    )
    .await;
    assert_eq!(chunk_text(&sse_chunks(r.text())), DEFAULT_REPLY);
    let r = send(
        &fake,
        Method::POST,
        &format!("{vertex}:generateContent"),
        &[("x-goog-api-key", KEY)],
        b,
    )
    .await;
    assert_error(&r, 401, "UNAUTHENTICATED");

    let r = send(
        &fake,
        Method::GET,
        "/v1beta/models",
        &[("x-goog-api-key", KEY)],
        Vec::new(),
    )
    .await;
    assert!(
        r.json()["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "models/gemini-2.5-pro")
    );
}

#[tokio::test]
async fn status_scenarios() {
    let fake = start().await;
    for (scenario, status, kind) in [
        (Scenario::Status(400), 400, "INVALID_ARGUMENT"),
        (Scenario::Status(401), 401, "UNAUTHENTICATED"),
        (Scenario::Status(403), 403, "PERMISSION_DENIED"),
        (Scenario::Status(404), 404, "NOT_FOUND"),
        (Scenario::Status(413), 413, "INVALID_ARGUMENT"),
        (Scenario::Status(429), 429, "RESOURCE_EXHAUSTED"),
        (Scenario::Status429NoRetryAfter, 429, "RESOURCE_EXHAUSTED"),
        (Scenario::InsufficientQuota, 429, "RESOURCE_EXHAUSTED"),
        (Scenario::Status(500), 500, "INTERNAL"),
        (Scenario::Status(502), 502, "UNAVAILABLE"),
        (Scenario::Status(503), 503, "UNAVAILABLE"),
        (Scenario::Status(504), 504, "DEADLINE_EXCEEDED"),
        (Scenario::Status(529), 529, "UNAVAILABLE"),
    ] {
        let name = scenario.name();
        for r in [
            post(&fake, STREAM, &[("x-fake-scenario", &name)], &body("hi")).await,
            post(&fake, GENERATE, &[], &body(&format!("hi {}", scenario.marker()))).await,
        ] {
            let e = assert_error(&r, status, kind);
            let details = e["details"].as_array().cloned().unwrap_or_default();
            let retry = details
                .iter()
                .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo");
            match scenario {
                Scenario::Status(429) => {
                    assert_eq!(retry.unwrap()["retryDelay"], format!("{RETRY_DELAY_SECS}s"));
                }
                Scenario::InsufficientQuota => {
                    assert!(retry.is_none());
                    assert!(
                        details[0]["violations"][0]["quotaId"]
                            .as_str()
                            .unwrap()
                            .contains("PerDay")
                    );
                }
                _ => assert!(retry.is_none(), "{name}"),
            }
        }
    }
    // error-midstream on a non-streaming call is a 500.
    let r = post(&fake, GENERATE, &[], &body(&Scenario::ErrorMidstream.marker())).await;
    assert_error(&r, 500, "INTERNAL");
}

#[tokio::test]
async fn cut_error_midstream_cache_reasoning() {
    let fake = start().await;
    let r = post(
        &fake,
        STREAM,
        &[],
        &body(&format!("hi {}", Scenario::Cut.marker())),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_err());
    assert_eq!(fake.requests().pop().unwrap().usage, None);

    let r = post(&fake, STREAM, &[], &body(&Scenario::ErrorMidstream.marker())).await;
    let chunks = sse_chunks(r.text());
    assert_eq!(chunks.len(), 2);
    assert!(chunks[0]["candidates"][0].get("finishReason").is_none());
    assert_eq!(chunks[1]["error"]["status"], "INTERNAL");
    assert_eq!(fake.requests().pop().unwrap().usage, None);

    let b = body(&Scenario::Cache.marker());
    let usage = post(&fake, GENERATE, &[], &b).await.json()["usageMetadata"].clone();
    let prompt = prompt_tokens_for_body_len(len(&b));
    assert_eq!(usage["cachedContentTokenCount"], prompt / 2);
    assert_eq!(usage["promptTokenCount"], prompt);
    let b = body(&Scenario::Reasoning.marker());
    let chunks = sse_chunks(post(&fake, STREAM, &[], &b).await.text());
    let usage = &chunks.last().unwrap()["usageMetadata"];
    assert_eq!(usage["thoughtsTokenCount"], THOUGHTS_TOKENS);
    let prompt = prompt_tokens_for_body_len(len(&b));
    assert_eq!(usage["totalTokenCount"], prompt + 3 + THOUGHTS_TOKENS);
}

// ---- The real Gemini CLI against the fake, no gateway ----

async fn gemini(fake: &FakeGemini, prompt: &str, model: Option<&str>) -> Option<AgentRun> {
    let bin = gemini_bin()?;
    let base = fake.base_url();
    let prompt = prompt.to_owned();
    let model = model.map(str::to_owned);
    Some(
        tokio::task::spawn_blocking(move || {
            let mut env = vec![("GEMINI_API_KEY", KEY), ("GOOGLE_GEMINI_BASE_URL", base.as_str())];
            if let Some(m) = &model {
                env.push(("GEMINI_MODEL", m.as_str()));
            }
            run_gemini(&bin, &prompt, &env, None)
        })
        .await
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_cli_says_hi_and_completes_a_tool_loop() {
    let fake = start().await;
    let Some(run) = gemini(&fake, "say hi", None).await else {
        return;
    };
    assert!(run.success(), "{}", run.output());
    assert_eq!(run.final_text(), DEFAULT_REPLY, "{}", run.output());
    let requests = fake.requests();
    // The model router's classification call, then the turn.
    let router = requests
        .iter()
        .find(|r| r.path.ends_with(":generateContent"))
        .expect("the router call");
    assert_eq!(router.response_status, 200);
    let turn = requests
        .iter()
        .find(|r| r.path.ends_with(":streamGenerateContent"))
        .expect("the turn");
    assert_eq!(turn.query.as_deref(), Some("alt=sse"));
    assert_eq!(turn.header("x-goog-api-key"), Some(KEY));
    assert!(
        turn.header("user-agent").unwrap().starts_with("GeminiCLI"),
        "{turn:?}"
    );
    assert_eq!(requests.len(), 2, "{requests:#?}");

    fake.clear();
    let run = gemini(&fake, "run echo TOOL_OK", Some("gemini-2.5-pro"))
        .await
        .unwrap();
    assert!(run.success(), "{}", run.output());
    assert_eq!(run.final_text(), "Tool said: TOOL_OK", "{}", run.output());
    let requests = fake.requests();
    assert!(
        requests.iter().all(|r| r.path.contains("gemini-2.5-pro")),
        "{requests:#?}"
    );
    assert_eq!(requests.len(), 2, "GEMINI_MODEL skips the router: {requests:#?}");
    let tools: Vec<String> = requests[0].body_json().unwrap()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["functionDeclarations"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    assert!(tools.iter().any(|t| t == "run_shell_command"), "{tools:?}");
}

// ---- Measurement: how Gemini CLI retries (run with `--ignored --nocapture`) ----

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

/// Runs `gemini -p` with an explicit model (`GEMINI_MODEL=gemini-2.5-pro`, so that the model
/// router's own call does not mix in) against one fake per scenario (all at once), noting when
/// each request arrives; prints one JSON line per scenario and writes them to
/// `e2e/captures/gemini-retries.jsonl`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, minutes long"]
async fn measure_gemini_cli_retries() {
    let Some(bin) = gemini_bin() else {
        return;
    };
    let mut tasks = Vec::new();
    for scenario in MEASURED {
        let bin = bin.clone();
        tasks.push(tokio::spawn(async move {
            let fake = start().await;
            let base = fake.base_url();
            let prompt = format!("say hi {}", scenario.marker());
            let started = std::time::Instant::now();
            let run = tokio::task::spawn_blocking(move || {
                tollgate_tests::agents::run_gemini_for(
                    &bin,
                    &prompt,
                    &[("GEMINI_API_KEY", KEY), ("GOOGLE_GEMINI_BASE_URL", &base), ("GEMINI_MODEL", "gemini-2.5-pro")],
                    None,
                    std::time::Duration::from_secs(480),
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
            let tail: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).rev().take(4).collect();
            json!({
                "cli": "gemini", "scenario": scenario.name(), "attempts": requests.len(),
                "arrivals_ms": seen, "exit": run.code, "elapsed_ms": run.elapsed.as_millis() as u64,
                "timed_out": run.timed_out, "final": run.final_text(), "json_error": run.json_error(),
                "stderr_tail": tail.into_iter().rev().collect::<Vec<_>>(),
                "paths": requests.iter().map(|r| format!("{} {}", r.path, r.response_status)).collect::<Vec<_>>(),
            })
        }));
    }
    let mut lines = Vec::new();
    for t in tasks {
        let line = t.await.unwrap();
        println!("{line}");
        lines.push(line.to_string());
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/captures/gemini-retries.jsonl");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(out, lines.join("\n") + "\n").unwrap();
}
