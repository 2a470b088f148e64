//! Codex CLI and Gemini CLI (the real ones from npm, pinned in `e2e/package.json`) and the
//! OpenAI and Gemini wire formats through the real `tollgate-proxy` binary: the same virtual
//! keys, model rules, budgets, metering and audit as Claude Code, each refusal in the client's
//! own error format. The providers are faithful fakes (`tests/src/fake_openai`,
//! `tests/src/fake_gemini`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_dataplane::policy::document::ProviderKind;
use tollgate_dataplane::pricing::{PriceTable, ProviderPricing};
use tollgate_dataplane::usage::Usage;
use tollgate_tests::agents::{AgentRun, CodexOptions, codex_bin, gemini_bin, run_codex_with, run_gemini};
use tollgate_tests::fake_gemini::{FakeGemini, FakeGeminiConfig};
use tollgate_tests::fake_openai::{FakeOpenAi, FakeOpenAiConfig};
use tollgate_tests::harness::{Proxy, Reply, send};
use tollgate_tests::policy::sha256_hex;

const OPENAI_KEY: &str = "sk-openai-upstream-SECRET";
const GEMINI_KEY: &str = "AIza-gemini-upstream-SECRET";
const KEY_ALICE: &str = "tg_alice_agents_SECRET_0001";
const KEY_INTERN: &str = "tg_intern_agents_SECRET_0002";
const KEY_BROKE: &str = "tg_broke_agents_SECRET_0003";
const KEY_NOSHELL: &str = "tg_noshell_agents_SECRET_0004";
const GEMINI_MODEL: &str = "gemini-2.5-flash";

struct Rig {
    openai: FakeOpenAi,
    gemini: FakeGemini,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let openai = FakeOpenAi::start(FakeOpenAiConfig::new(OPENAI_KEY))
        .await
        .unwrap();
    let gemini = FakeGemini::start(FakeGeminiConfig::new(GEMINI_KEY))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            r#"version: 1
teams: [{{id: platform}}, {{id: interns, models: {{deny: ["*pro*", "gpt-5"]}}}}]
keys:
  - {{id: alice, sha256: {alice}, user: alice@acme.example, team: platform}}
  - {{id: intern, sha256: {intern}, team: interns}}
  - {{id: broke, sha256: {broke}, team: platform}}
  - {{id: noshell, sha256: {noshell}, team: platform, tools: {{deny: [exec_command, local_shell, shell, run_shell_command, web_search, googleSearch]}}}}
budgets:
  - {{id: broke-daily, scope: {{kind: key, name: broke}}, limit_micro_usd: 1, period: daily}}
providers:
  - {{id: openai, kind: openai, endpoint: "{openai}", credential: {{env: TEST_OPENAI_KEY}}}}
  - {{id: gemini, kind: gemini, endpoint: "{gemini}", credential: {{env: TEST_GEMINI_KEY}}}}
  - {{id: openai-badkey, kind: openai, endpoint: "{openai}", credential: {{env: TEST_BAD_KEY}}}}
  - {{id: gemini-badkey, kind: gemini, endpoint: "{gemini}", credential: {{env: TEST_BAD_KEY}}}}
  - {{id: vertex, kind: vertex, endpoint: "{gemini}", region: us-central1, project: acme-ai, credential: {{env: TEST_GEMINI_KEY}}}}
routes:
  - {{match: gpt-badkey, targets: [{{provider: openai-badkey, model: gpt-5}}]}}
  - {{match: gemini-badkey, targets: [{{provider: gemini-badkey, model: gemini-2.5-flash}}]}}
  - {{match: gw-gemini-vertex, targets: [{{provider: vertex, model: gemini-2.5-flash}}]}}
  - {{match: "gpt-*", targets: [{{provider: openai}}]}}
  - {{match: "gemini-*", targets: [{{provider: gemini}}]}}
"#,
            alice = sha256_hex(KEY_ALICE),
            intern = sha256_hex(KEY_INTERN),
            broke = sha256_hex(KEY_BROKE),
            noshell = sha256_hex(KEY_NOSHELL),
            openai = openai.base_url(),
            gemini = gemini.base_url(),
        ),
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let proxy = Proxy::start_with_args(
        &PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy")),
        &policy,
        &[
            ("TEST_OPENAI_KEY", OPENAI_KEY),
            ("TEST_GEMINI_KEY", GEMINI_KEY),
            ("TEST_BAD_KEY", "not-the-provider-key"),
        ],
        &["--audit-dir", spool.to_str().unwrap()],
    )
    .unwrap();
    Rig {
        openai,
        gemini,
        proxy,
        dir,
    }
}

fn model_records(spool: &Path) -> Vec<Value> {
    let Ok(segments) = tollgate_dataplane::audit::spool::list_segments(spool) else {
        return Vec::new();
    };
    segments
        .into_iter()
        .flat_map(|(_, seg)| {
            std::fs::read_to_string(seg)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(|v| v["kind"] == "model_request")
        .map(|v| v["body"].clone())
        .collect()
}

async fn audited(rig: &Rig, n: usize) -> Vec<Value> {
    let spool = rig.dir.path().join("spool");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = model_records(&spool);
        if records.len() >= n || Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The audited tokens at the provider's own price, rounded up to the micro-dollar.
fn expected_cost(record: &Value, kind: ProviderKind) -> u64 {
    let prices = PriceTable::builtin();
    let model = record["upstream_model"].as_str().unwrap();
    let price = prices
        .for_provider(ProviderPricing { kind, region: None }, model)
        .map(|p| p.price)
        .or_else(|| prices.get(model))
        .unwrap_or_else(|| panic!("no price for {model}"));
    let t = &record["tokens"];
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    price
        .cost(&Usage {
            input_tokens: n("input"),
            output_tokens: n("output"),
            cache_read_tokens: n("cache_read"),
            cache_write_5m_tokens: n("cache_write_5m"),
            cache_write_1h_tokens: n("cache_write_1h"),
            ..Default::default()
        })
        .micro_usd_ceil()
}

async fn codex(rig: &Rig, key: &str, prompt: &str, model: &str) -> Option<AgentRun> {
    let bin = codex_bin()?;
    let base = format!("{}/openai/v1", rig.proxy.base_url());
    let (key, prompt, model) = (key.to_owned(), prompt.to_owned(), model.to_owned());
    Some(
        tokio::task::spawn_blocking(move || {
            let options = CodexOptions {
                timeout: Duration::from_secs(120),
                ..CodexOptions::no_retries()
            };
            run_codex_with(
                &bin,
                &prompt,
                &[
                    ("OPENAI_BASE_URL", base.as_str()),
                    ("OPENAI_API_KEY", key.as_str()),
                    ("CODEX_MODEL", model.as_str()),
                ],
                None,
                &options,
            )
        })
        .await
        .unwrap(),
    )
}

async fn gemini(rig: &Rig, key: &str, prompt: &str, model: &str) -> Option<AgentRun> {
    let bin = gemini_bin()?;
    let base = format!("{}/gemini", rig.proxy.base_url());
    let (key, prompt, model) = (key.to_owned(), prompt.to_owned(), model.to_owned());
    Some(
        tokio::task::spawn_blocking(move || {
            run_gemini(
                &bin,
                &prompt,
                &[
                    ("GOOGLE_GEMINI_BASE_URL", base.as_str()),
                    ("GEMINI_API_KEY", key.as_str()),
                    ("GEMINI_MODEL", model.as_str()),
                ],
                None,
            )
        })
        .await
        .unwrap(),
    )
}

fn no_secret_in(text: &str) {
    for secret in [
        OPENAI_KEY,
        GEMINI_KEY,
        KEY_ALICE,
        KEY_INTERN,
        KEY_BROKE,
        KEY_NOSHELL,
    ] {
        assert!(!text.contains(secret), "a secret leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_runs_a_tool_loop_through_the_gateway() {
    let rig = rig().await;
    let Some(run) = codex(&rig, KEY_ALICE, "run echo TOOL_OK", "gpt-5").await else {
        return;
    };
    assert!(run.success(), "{}\nproxy:\n{}", run.output(), rig.proxy.logs());
    assert!(
        run.final_text().contains("Tool said: TOOL_OK"),
        "{}",
        run.output()
    );
    let calls: Vec<_> = rig
        .openai
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/responses")
        .collect();
    assert!(
        calls.len() >= 2,
        "a tool loop is two model calls at least: {}",
        calls.len()
    );
    for c in &calls {
        assert_eq!(
            c.header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str())
        );
    }
    let audit = audited(&rig, calls.len()).await;
    assert_eq!(audit.len(), calls.len(), "{audit:?}");
    let session = audit[0]["session_id"].as_str().unwrap_or("");
    assert!(!session.is_empty(), "Codex's session id is attributed: {audit:?}");
    for a in &audit {
        assert_eq!(a["provider"], "openai");
        assert_eq!(a["key_id"], "alice");
        assert_eq!(a["session_id"], session, "one session for the whole loop");
        assert!(a["tokens"]["output"].as_u64().unwrap() > 0, "{a}");
        assert_eq!(
            a["cost_micro_usd"].as_u64().unwrap(),
            expected_cost(a, ProviderKind::Openai),
            "{a}"
        );
    }
    no_secret_in(&rig.proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_runs_a_tool_loop_through_the_gateway() {
    let rig = rig().await;
    let Some(run) = gemini(&rig, KEY_ALICE, "run echo TOOL_OK", GEMINI_MODEL).await else {
        return;
    };
    assert!(run.success(), "{}\nproxy:\n{}", run.output(), rig.proxy.logs());
    assert!(
        run.final_text().contains("Tool said: TOOL_OK"),
        "{}",
        run.output()
    );
    let calls: Vec<_> = rig
        .gemini
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(":streamGenerateContent") || r.path.contains(":generateContent"))
        .collect();
    assert!(calls.len() >= 2, "{}", calls.len());
    for c in &calls {
        assert_eq!(c.header("x-goog-api-key"), Some(GEMINI_KEY));
    }
    let audit = audited(&rig, calls.len()).await;
    let generated: Vec<&Value> = audit
        .iter()
        .filter(|a| a["endpoint"] == "generate_content")
        .collect();
    assert_eq!(generated.len(), calls.len(), "{audit:?}");
    for a in generated {
        assert_eq!(a["provider"], "gemini");
        assert_eq!(a["key_id"], "alice");
        assert!(a["tokens"]["output"].as_u64().unwrap() > 0, "{a}");
        assert_eq!(
            a["cost_micro_usd"].as_u64().unwrap(),
            expected_cost(a, ProviderKind::Gemini),
            "{a}"
        );
    }
    no_secret_in(&rig.proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_and_gemini_show_the_engineer_a_denied_model_and_a_spent_budget() {
    let rig = rig().await;
    let Some(run) = codex(&rig, KEY_INTERN, "say hi", "gpt-5").await else {
        return;
    };
    assert!(!run.success());
    assert!(
        run.output().contains("is not allowed for virtual key 'intern'"),
        "{}",
        run.output()
    );
    let run = codex(&rig, KEY_BROKE, "say hi", "gpt-5").await.unwrap();
    assert!(!run.success());
    assert!(
        run.output().contains("Quota exceeded"),
        "Codex names it: {}",
        run.output()
    );
    let Some(run) = gemini(&rig, KEY_INTERN, "say hi", "gemini-2.5-pro").await else {
        return;
    };
    assert!(!run.success());
    assert!(
        run.output().contains("is not allowed for virtual key 'intern'"),
        "{}",
        run.output()
    );
    let started = Instant::now();
    let run = gemini(&rig, KEY_BROKE, "say hi", GEMINI_MODEL).await.unwrap();
    assert!(!run.success());
    assert!(
        run.output().contains("broke-daily"),
        "the budget is named: {}",
        run.output()
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a spent budget is not retried for minutes"
    );
    // Nothing reached the providers.
    assert!(rig.openai.requests().iter().all(|r| r.path != "/v1/responses"));
    assert!(rig.gemini.requests().iter().all(|r| !r.path.contains("Content")));
}

async fn post(rig: &Rig, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    send(
        "POST",
        &format!("{}{path}", rig.proxy.base_url()),
        headers,
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap()
}

/// The usage a client saw, in audit-record terms (`input` without cached, `output`).
fn client_usage(format: &str, reply: &Reply) -> (u64, u64, u64) {
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let mut usage = Value::Null;
    if reply
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream"))
    {
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            match format {
                "responses" if v["type"] == "response.completed" => usage = v["response"]["usage"].clone(),
                "chat" if !v["usage"].is_null() => usage = v["usage"].clone(),
                "gemini" if !v["usageMetadata"].is_null() => usage = v["usageMetadata"].clone(),
                _ => {}
            }
        }
    } else {
        let v: Value = serde_json::from_str(&text).unwrap();
        usage = match format {
            "gemini" => v["usageMetadata"].clone(),
            _ => v["usage"].clone(),
        };
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    match format {
        "responses" => {
            let cached = n(&usage["input_tokens_details"]["cached_tokens"]);
            (
                n(&usage["input_tokens"]) - cached,
                cached,
                n(&usage["output_tokens"]),
            )
        }
        "chat" => {
            let cached = n(&usage["prompt_tokens_details"]["cached_tokens"]);
            (
                n(&usage["prompt_tokens"]) - cached,
                cached,
                n(&usage["completion_tokens"]),
            )
        }
        _ => {
            let cached = n(&usage["cachedContentTokenCount"]);
            (
                n(&usage["promptTokenCount"]) - cached,
                cached,
                n(&usage["candidatesTokenCount"]) + n(&usage["thoughtsTokenCount"]),
            )
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wire_format_is_metered_exactly_streaming_or_not() {
    let rig = rig().await;
    let bearer = format!("Bearer {KEY_ALICE}");
    let auth = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let mut cases = Vec::new();
    for stream in [false, true] {
        for scenario in ["", "[[scenario:cache]]", "[[scenario:reasoning]]"] {
            let responses = json!({"model": "gpt-5", "stream": stream, "input": format!("hello {scenario}")});
            cases.push((
                "responses",
                post(&rig, "/openai/v1/responses", &auth, responses).await,
            ));
            let chat = json!({"model": "gpt-4.1", "stream": stream,
                "messages": [{"role": "user", "content": format!("hello {scenario}")}]});
            cases.push((
                "chat",
                post(&rig, "/openai/v1/chat/completions", &auth, chat).await,
            ));
            let method = if stream {
                "streamGenerateContent?alt=sse&key="
            } else {
                "generateContent?key="
            };
            let gem =
                json!({"contents": [{"role": "user", "parts": [{"text": format!("hello {scenario}")}]}]});
            // The Gemini key as the `key` query parameter, as Gemini SDKs may send it.
            let path = format!("/gemini/v1beta/models/{GEMINI_MODEL}:{method}{KEY_ALICE}");
            cases.push((
                "gemini",
                post(&rig, &path, &[("content-type", "application/json")], gem).await,
            ));
        }
    }
    for (format, reply) in &cases {
        assert_eq!(reply.status, 200, "{format}: {}", reply.text());
    }
    // The Chat stream was asked for its usage by the gateway.
    let chat_streams: Vec<_> = rig
        .openai
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions" && r.body_json().is_some_and(|b| b["stream"] == true))
        .collect();
    assert_eq!(chat_streams.len(), 3);
    for r in &chat_streams {
        assert_eq!(r.body_json().unwrap()["stream_options"]["include_usage"], true);
    }
    let audit = audited(&rig, cases.len()).await;
    assert_eq!(audit.len(), cases.len(), "{audit:?}");
    // Records come in completion order: match them to replies by their tokens.
    for (format, reply) in &cases {
        let (input, cached, output) = client_usage(format, reply);
        assert!(output > 0, "{format}: {}", reply.text());
        let kind = if *format == "gemini" {
            ProviderKind::Gemini
        } else {
            ProviderKind::Openai
        };
        let found = audit.iter().any(|a| {
            a["tokens"]["input"] == input
                && a["tokens"]["cache_read"].as_u64().unwrap_or(0) == cached
                && a["tokens"]["output"] == output
                && a["cost_micro_usd"].as_u64() == Some(expected_cost(a, kind))
        });
        assert!(
            found,
            "{format}: usage ({input}, {cached}, {output}) not audited at its price: {audit:?}"
        );
    }
    assert!(
        audit
            .iter()
            .any(|a| a["tokens"]["cache_read"].as_u64().unwrap_or(0) > 0),
        "cached tokens read"
    );
    let logs = rig.proxy.logs();
    no_secret_in(&logs);
    assert!(!logs.contains("key="), "the key query parameter is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_in_each_clients_own_error_format() {
    let rig = rig().await;
    // OpenAI: an unknown key.
    let r = post(
        &rig,
        "/openai/v1/responses",
        &[("authorization", "Bearer tg_nobody")],
        json!({"model": "gpt-5", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key", "{}", r.text());
    // OpenAI: a denied model is a 404 model_not_found (Codex shows it at once).
    let r = post(
        &rig,
        "/openai/v1/chat/completions",
        &[("authorization", &format!("Bearer {KEY_INTERN}"))],
        json!({"model": "gpt-5", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    // Gemini: a denied model, in Google's shape.
    let r = post(
        &rig,
        "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
        &[("x-goog-api-key", KEY_INTERN)],
        json!({"contents": []}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["status"], "PERMISSION_DENIED", "{}", r.text());
    // Gemini: a spent budget says when it resets (a RetryInfo), so Gemini CLI stops.
    let r = post(
        &rig,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        &[("x-goog-api-key", KEY_BROKE)],
        json!({"contents": [{"parts": [{"text": "hi"}]}]}),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    assert!(r.text().contains("RetryInfo"), "{}", r.text());
    // A Gemini model is not served to an OpenAI client, nor a GPT model to a Gemini client.
    let r = post(
        &rig,
        "/openai/v1/responses",
        &[("authorization", &format!("Bearer {KEY_ALICE}"))],
        json!({"model": "gemini-2.5-flash", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    // Two different keys (header and query) are refused, whichever is valid.
    let r = post(
        &rig,
        &format!("/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={KEY_INTERN}"),
        &[("x-goog-api-key", KEY_ALICE)],
        json!({"contents": []}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    no_secret_in(&r.text());
    // Paths the gateway does not serve answer in the client's format too, and a missing key
    // names the client's own variable.
    let r = post(&rig, "/openai/v1/embeddings", &[], json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.json()["error"]["message"].is_string() && r.json()["type"].is_null(),
        "{}",
        r.text()
    );
    let r = post(&rig, "/gemini/v1beta/models/m:embedContent", &[], json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND", "{}", r.text());
    let r = post(
        &rig,
        "/openai/v1/responses",
        &[],
        json!({"model": "gpt-5", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("OPENAI_API_KEY") && !r.text().contains("ANTHROPIC"),
        "{}",
        r.text()
    );
    no_secret_in(&rig.proxy.logs());
    assert!(rig.openai.requests().is_empty() && rig.gemini.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_model_list_shows_what_the_key_may_use() {
    let rig = rig().await;
    let r = send(
        "GET",
        &format!("{}/openai/v1/models", rig.proxy.base_url()),
        &[("authorization", &format!("Bearer {KEY_ALICE}"))],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"gpt-5".to_owned()), "{ids:?}");
    assert!(
        ids.iter().all(|m| m.starts_with("gpt-")),
        "only models OpenAI targets serve: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_models_on_vertex_ai_are_served_and_priced_as_vertex() {
    let rig = rig().await;
    for (method, stream) in [
        ("generateContent", false),
        ("streamGenerateContent?alt=sse", true),
    ] {
        let r = post(
            &rig,
            &format!("/gemini/v1beta/models/gw-gemini-vertex:{method}"),
            &[
                ("x-goog-api-key", KEY_ALICE),
                ("content-type", "application/json"),
            ],
            json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}),
        )
        .await;
        assert_eq!(r.status, 200, "stream={stream}: {}", r.text());
        assert!(client_usage("gemini", &r).2 > 0);
    }
    let calls: Vec<_> = rig
        .gemini
        .requests()
        .into_iter()
        .filter(|r| {
            r.path.starts_with(
                "/v1/projects/acme-ai/locations/us-central1/publishers/google/models/gemini-2.5-flash:",
            )
        })
        .collect();
    assert_eq!(
        calls.len(),
        2,
        "{:?}",
        rig.gemini
            .requests()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
    for c in &calls {
        assert_eq!(
            c.header("authorization"),
            Some(format!("Bearer {GEMINI_KEY}").as_str())
        );
        assert_eq!(c.header("x-goog-api-key"), None);
    }
    let audit = audited(&rig, 2).await;
    for a in &audit {
        assert_eq!(a["provider"], "vertex");
        assert_eq!(a["upstream_model"], "gemini-2.5-flash");
        let prices = PriceTable::builtin();
        let p = prices
            .for_provider(
                ProviderPricing {
                    kind: ProviderKind::Vertex,
                    region: Some("us-central1"),
                },
                "gemini-2.5-flash",
            )
            .unwrap();
        assert!(p.entry.starts_with("vertex_ai/"), "{}", p.entry);
        let t = &a["tokens"];
        let cost = p
            .price
            .cost(&Usage {
                input_tokens: t["input"].as_u64().unwrap(),
                output_tokens: t["output"].as_u64().unwrap(),
                cache_read_tokens: t["cache_read"].as_u64().unwrap_or(0),
                ..Default::default()
            })
            .micro_usd_ceil();
        assert_eq!(a["cost_micro_usd"].as_u64().unwrap(), cost, "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agents_built_in_tools_follow_the_keys_tool_policy() {
    let rig = rig().await;
    // What Codex CLI declares (e2e/captures): its shell is `exec_command`, plus built-ins.
    let bearer = format!("Bearer {KEY_NOSHELL}");
    let responses = json!({"model": "gpt-5", "input": "hi", "tools": [
        {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
        {"type": "function", "name": "view_image", "parameters": {"type": "object"}},
        {"type": "web_search"},
        {"type": "local_shell"},
    ]});
    let r = post(
        &rig,
        "/openai/v1/responses",
        &[("authorization", bearer.as_str())],
        responses,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let chat = json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "exec_command", "parameters": {}}},
        {"type": "function", "function": {"name": "read_file", "parameters": {}}},
    ]});
    let r = post(
        &rig,
        "/openai/v1/chat/completions",
        &[("authorization", bearer.as_str())],
        chat,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = rig.openai.requests();
    let names = |body: &Value| -> Vec<String> {
        body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t["name"]
                    .as_str()
                    .or(t["function"]["name"].as_str())
                    .or(t["type"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(names(&sent[0].body_json().unwrap()), ["view_image"]);
    assert_eq!(names(&sent[1].body_json().unwrap()), ["read_file"]);
    // Gemini CLI: function declarations by name, Google's built-in tools by their key.
    let gem = json!({"contents": [{"parts": [{"text": "hi"}]}], "tools": [
        {"functionDeclarations": [{"name": "run_shell_command"}, {"name": "read_file"}]},
        {"googleSearch": {}},
    ]});
    let r = post(
        &rig,
        &format!("/gemini/v1beta/models/{GEMINI_MODEL}:generateContent"),
        &[("x-goog-api-key", KEY_NOSHELL)],
        gem,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = rig.gemini.requests()[0].body_json().unwrap();
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [{"name": "read_file"}]}])
    );
    // Forcing a removed tool is refused in the client's format.
    let forced = json!({"model": "gpt-5", "input": "hi",
        "tools": [{"type": "function", "name": "exec_command", "parameters": {}}],
        "tool_choice": {"type": "function", "name": "exec_command"}});
    let r = post(
        &rig,
        "/openai/v1/responses",
        &[("authorization", bearer.as_str())],
        forced,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_hostile_client_tried_on_the_openai_route_is_refused_or_cut() {
    let rig = rig().await;
    let bearer = format!("Bearer {KEY_NOSHELL}");
    let auth = [("authorization", bearer.as_str())];
    // Chat's deprecated `functions` cannot carry a tool the policy denies.
    let legacy = json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}],
        "functions": [{"name": "exec_command", "parameters": {}}], "function_call": {"name": "exec_command"}});
    let r = post(&rig, "/openai/v1/chat/completions", &auth, legacy).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("exec_command"), "{}", r.text());
    // A namespace holding a denied tool goes whole.
    let ns = json!({"model": "gpt-5", "input": "hi", "tools": [
        {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "exec_command", "parameters": {}}]},
        {"type": "function", "name": "view_image", "parameters": {}},
    ]});
    let r = post(&rig, "/openai/v1/responses", &auth, ns).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = rig.openai.requests().pop().unwrap().body_json().unwrap();
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "name": "view_image", "parameters": {}}])
    );
    // A second `stream_options` (the provider keeps the last) cannot switch the usage off.
    let alice = format!("Bearer {KEY_ALICE}");
    let dup = r#"{"model":"gpt-5","messages":[],"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}"#;
    let r = send(
        "POST",
        &format!("{}/openai/v1/chat/completions", rig.proxy.base_url()),
        &[("authorization", alice.as_str())],
        Bytes::from_static(dup.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("stream_options"), "{}", r.text());
    // Tiers priced differently, and background generation, cannot be metered: refused.
    for extra in [json!({"service_tier": "priority"}), json!({"background": true})] {
        let mut body = json!({"model": "gpt-5", "input": "hi"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = post(
            &rig,
            "/openai/v1/responses",
            &[("authorization", alice.as_str())],
            body,
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    // The tenant picks neither the provider account's organization nor its project.
    let before = rig.openai.requests().len();
    let r = post(
        &rig,
        "/openai/v1/responses",
        &[
            ("authorization", alice.as_str()),
            ("openai-organization", "org-evil"),
            ("openai-project", "proj_evil"),
            ("session-id", "sess-1"),
        ],
        json!({"model": "gpt-5", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &rig.openai.requests()[before];
    assert_eq!(sent.header("openai-organization"), None);
    assert_eq!(sent.header("openai-project"), None);
    assert_eq!(sent.header("session-id"), Some("sess-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_refusing_the_gateways_key_is_a_502_in_the_clients_format() {
    let rig = rig().await;
    let r = post(
        &rig,
        "/openai/v1/responses",
        &[("authorization", &format!("Bearer {KEY_ALICE}"))],
        json!({"model": "gpt-badkey", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "server_error", "{}", r.text());
    assert!(r.text().contains("openai-badkey") && !r.text().contains("not-the-provider-key"));
    let r = post(
        &rig,
        "/gemini/v1beta/models/gemini-badkey:generateContent",
        &[("x-goog-api-key", KEY_ALICE)],
        json!({"contents": [{"parts": [{"text": "hi"}]}]}),
    )
    .await;
    assert_eq!(
        r.status,
        502,
        "Google's 400 API_KEY_INVALID is the gateway's key: {}",
        r.text()
    );
    assert_eq!(r.json()["error"]["status"], "UNAVAILABLE", "{}", r.text());
    assert!(r.text().contains("gemini-badkey") && !r.text().contains("not-the-provider-key"));
    // A 400 about the request itself still reaches the client as Google sent it.
    let r = post(
        &rig,
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        &[("x-goog-api-key", KEY_ALICE)],
        json!({"contents": [{"parts": [{"text": "[[scenario:status-400]]"}]}]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT", "{}", r.text());
}
