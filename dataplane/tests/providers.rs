//! The real `tollgate-proxy` binary in front of Amazon Bedrock, Google Vertex AI and Azure AI
//! Foundry (faithful fakes: `e2e/fakes/`, which check SigV4 with botocore, JWT assertions with
//! `cryptography`, and Entra client credentials), and routing across providers: fallback from
//! Anthropic to Bedrock, weighted load balancing, and the retry budget.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_dataplane::policy::document::ProviderKind;
use tollgate_dataplane::pricing::{PriceSource, PriceTable, ProviderPricing};
use tollgate_dataplane::usage::Usage;
use tollgate_tests::claude::{claude_bin, run_claude};
use tollgate_tests::fake_anthropic::{DEFAULT_REPLY, FakeAnthropic, FakeConfig, SCENARIO_HEADER};
use tollgate_tests::fake_bedrock::{FakeBedrock, FakeBedrockOptions};
use tollgate_tests::fake_cloud::{FakeFoundry, FakeVertex, FoundryOptions, VertexOptions};
use tollgate_tests::harness::{Proxy, Reply, send};
use tollgate_tests::policy::{KEY_ALICE, PROVIDER_KEY, PROVIDER_KEY_ENV, sha256_hex};

/// The Bedrock model the tiers map to (a cross-region inference profile).
const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
/// The Vertex model id (`@` date).
const VERTEX_MODEL: &str = "claude-sonnet-4-5@20250929";

struct Rig {
    fake: FakeAnthropic,
    bedrock: FakeBedrock,
    vertex: FakeVertex,
    foundry: FakeFoundry,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

/// Routes mapping Claude Code's three tiers to `provider`'s own model ids.
fn tier_routes(provider: &str) -> String {
    let ids = match provider {
        "bedrock" => [
            "us.anthropic.claude-opus-4-8",
            BEDROCK_MODEL,
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        ],
        "vertex" => [
            "claude-opus-4-5@20251101",
            VERTEX_MODEL,
            "claude-haiku-4-5@20251001",
        ],
        _ => return String::new(),
    };
    format!(
        r#"  - {{match: "claude-opus-*", targets: [{{provider: {provider}, model: "{}"}}]}}
  - {{match: "claude-sonnet-*", targets: [{{provider: {provider}, model: "{}"}}]}}
  - {{match: "claude-haiku-*", targets: [{{provider: {provider}, model: "{}"}}]}}
"#,
        ids[0], ids[1], ids[2]
    )
}

fn policy(
    rig_dir: &Path,
    fake: &str,
    clouds: (&FakeBedrock, &FakeVertex, &FakeFoundry),
    tiers: &str,
) -> String {
    let (bedrock, vertex, foundry) = clouds;
    let foundry_opts = FoundryOptions::default();
    format!(
        r#"version: 1
teams: [{{id: platform}}]
keys:
  - {{id: alice, sha256: {alice}, user: alice@acme.example, team: platform}}
providers:
  - {{id: anthropic, kind: anthropic, endpoint: "{fake}", credential: {{env: {PROVIDER_KEY_ENV}}}}}
  - id: bedrock
    kind: bedrock
    endpoint: "{bedrock}"
    region: us-east-1
    aws: {{access_key_id: {{env: TEST_AWS_KEY_ID}}, secret_access_key: {{file: "{dir}/aws-secret"}}}}
  - id: vertex
    kind: vertex
    endpoint: "{vertex}"
    region: us-east5
    project: tollgate-test
    gcp: {{service_account_key: {{file: "{sa}"}}}}
  - id: foundry
    kind: foundry
    endpoint: "{foundry}"
    azure: {{tenant_id: "{tenant}", client_id: "{client}", client_secret: {{env: TEST_AZURE_SECRET}}, authority_host: "{authority}/"}}
  - id: flaky
    kind: anthropic
    endpoint: "{fake}"
    credential: {{env: {PROVIDER_KEY_ENV}}}
    retry_budget: {{percent: 0, min_per_second: 1}}
  - {{id: badkey, kind: anthropic, endpoint: "{fake}", credential: {{env: TEST_BAD_KEY}}}}
routes:
  - {{match: gw-bedrock, targets: [{{provider: bedrock, model: "{BEDROCK_MODEL}"}}]}}
  - {{match: gw-vertex, targets: [{{provider: vertex, model: "{VERTEX_MODEL}"}}]}}
  - {{match: gw-foundry, targets: [{{provider: foundry, model: claude-sonnet-4-5}}]}}
  - {{match: gw-fallback, targets: [{{provider: anthropic, model: claude-sonnet-4-5}}, {{provider: bedrock, model: "{BEDROCK_MODEL}"}}]}}
  - {{match: gw-budgeted, targets: [{{provider: flaky, model: claude-sonnet-4-5}}, {{provider: bedrock, model: "{BEDROCK_MODEL}"}}]}}
  - match: gw-weighted
    targets:
      - {{provider: anthropic, model: claude-sonnet-4-5, priority: 0, weight: 3}}
      - {{provider: vertex, model: "{VERTEX_MODEL}", priority: 0, weight: 1}}
  - {{match: gw-badkey, targets: [{{provider: badkey, model: claude-sonnet-4-5}}, {{provider: bedrock, model: "{BEDROCK_MODEL}"}}]}}
  - {{match: gw-badkey-only, targets: [{{provider: badkey, model: claude-sonnet-4-5}}]}}
{tiers}  - {{match: "*", targets: [{{provider: vertex}}]}}
"#,
        alice = sha256_hex(KEY_ALICE),
        bedrock = bedrock.base_url(),
        vertex = vertex.base_url(),
        sa = vertex.sa_key_path().display(),
        foundry = foundry.endpoint(),
        authority = foundry.base_url(),
        tenant = foundry_opts.tenant,
        client = foundry_opts.client_id,
        dir = rig_dir.display(),
        tiers = tier_routes(tiers),
    )
}

async fn rig() -> Rig {
    rig_with_tiers("").await
}

/// A rig whose `claude-opus-*`, `claude-sonnet-*` and `claude-haiku-*` go to `tiers`
/// (`bedrock` or `vertex`).
async fn rig_with_tiers(tiers: &str) -> Rig {
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let bedrock = FakeBedrock::start(FakeBedrockOptions::new(fake.base_url(), PROVIDER_KEY));
    let vertex = FakeVertex::start(&fake.base_url(), PROVIDER_KEY, VertexOptions::default());
    let foundry = FakeFoundry::start(&fake.base_url(), PROVIDER_KEY, FoundryOptions::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aws-secret"),
        format!("{}\n", bedrock.options.secret_access_key),
    )
    .unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        policy(dir.path(), &fake.base_url(), (&bedrock, &vertex, &foundry), tiers),
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let key_id = bedrock.options.access_key_id.clone();
    let azure_secret = FoundryOptions::default().client_secret.unwrap();
    let proxy = Proxy::start_with_args(
        &bin(),
        &path,
        &[
            (PROVIDER_KEY_ENV, PROVIDER_KEY),
            ("TEST_AWS_KEY_ID", key_id.as_str()),
            ("TEST_AZURE_SECRET", azure_secret.as_str()),
            ("TEST_BAD_KEY", "sk-ant-not-the-upstream-key"),
        ],
        &["--audit-dir", spool.to_str().unwrap()],
    )
    .unwrap();
    Rig {
        fake,
        bedrock,
        vertex,
        foundry,
        proxy,
        dir,
    }
}

fn body(model: &str, stream: bool) -> Bytes {
    Bytes::from(
        json!({
            "model": model,
            "max_tokens": 256,
            "stream": stream,
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "messages": [{"role": "user", "content": "say hi"}],
        })
        .to_string(),
    )
}

async fn messages(rig: &Rig, model: &str, stream: bool, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![
        ("authorization", format!("Bearer {KEY_ALICE}")),
        ("anthropic-version", "2023-06-01".to_owned()),
        ("anthropic-beta", "interleaved-thinking-2025-05-14".to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send(
        "POST",
        &format!("{}/anthropic/v1/messages", rig.proxy.base_url()),
        &h,
        body(model, stream),
    )
    .await
    .unwrap()
}

/// The text of an Anthropic SSE stream's text deltas, and its final usage.
fn sse_text_and_usage(raw: &str) -> (String, Value) {
    let mut text = String::new();
    let mut usage = json!({});
    for line in raw.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        match v["type"].as_str() {
            Some("content_block_delta") => text.push_str(v["delta"]["text"].as_str().unwrap_or("")),
            Some("message_start") => usage = v["message"]["usage"].clone(),
            Some("message_delta") => usage["output_tokens"] = v["usage"]["output_tokens"].clone(),
            _ => {}
        }
    }
    (text, usage)
}

fn model_records(spool: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(segments) = tollgate_dataplane::audit::spool::list_segments(spool) else {
        return out;
    };
    for (_, seg) in segments {
        for line in std::fs::read_to_string(seg).unwrap_or_default().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if v["kind"] == "model_request" {
                    out.push(v["body"].clone());
                }
            }
        }
    }
    out
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

/// What an audited exchange must cost: its tokens at the provider's own price (exact integer
/// arithmetic, rounded up to the micro-dollar).
fn expected_cost(record: &Value, kind: ProviderKind, region: &str) -> u64 {
    let prices = PriceTable::builtin();
    let model = record["upstream_model"].as_str().unwrap();
    let p = prices
        .for_provider(
            ProviderPricing {
                kind,
                region: Some(region),
            },
            model,
        )
        .unwrap_or_else(|| panic!("no price for {model}"));
    assert_eq!(p.source, PriceSource::Provider, "{model} priced by {}", p.entry);
    let t = &record["tokens"];
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    let usage = Usage {
        input_tokens: n("input"),
        output_tokens: n("output"),
        cache_read_tokens: n("cache_read"),
        cache_write_5m_tokens: n("cache_write_5m"),
        cache_write_1h_tokens: n("cache_write_1h"),
        ..Default::default()
    };
    p.price.cost(&usage).micro_usd_ceil()
}

async fn cost_metric(rig: &Rig, provider: &str) -> u64 {
    let metrics = rig.proxy.metrics().await.unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("tollgate_cost_micro_usd_total{") && l.contains(&format!("provider=\"{provider}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_serves_json_and_a_transcoded_stream_signed_with_sigv4() {
    let rig = rig().await;
    let r = messages(&rig, "gw-bedrock", false, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["content"][0]["text"], DEFAULT_REPLY);
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let r = messages(&rig, "gw-bedrock", true, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type").unwrap().starts_with("text/event-stream"),
        "the AWS event stream reaches the client as Anthropic SSE"
    );
    let (text, usage) = sse_text_and_usage(&r.text());
    assert_eq!(text, DEFAULT_REPLY);
    assert!(usage["output_tokens"].as_u64().unwrap() > 0, "{usage}");

    // The fake checked every signature with botocore, and saw the inference profile id,
    // the Bedrock version, and the beta header as the body's list.
    let records: Vec<Value> = rig
        .bedrock
        .records()
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/model/")))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    for rec in &records {
        assert_eq!(rec["signature_ok"], true, "{rec}");
        assert_eq!(rec["model"], BEDROCK_MODEL, "{rec}");
    }
    let forwarded = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect::<Vec<_>>();
    assert_eq!(forwarded.len(), 2);
    for f in &forwarded {
        assert_eq!(
            f.header("anthropic-beta"),
            Some("interleaved-thinking-2025-05-14")
        );
        assert_eq!(f.body_json().unwrap()["model"], BEDROCK_MODEL);
    }
    // Usage read from the transcoded stream is accounted under the provider, and audited.
    let audit = audited(&rig, 2).await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    for a in &audit {
        assert_eq!(a["provider"], "bedrock");
        assert_eq!(a["upstream_model"], BEDROCK_MODEL);
        assert!(a["tokens"]["output"].as_u64().unwrap() > 0, "{a}");
        // Bedrock's own price for the US inference profile (10% over the Anthropic API's).
        let cost = a["cost_micro_usd"].as_u64().unwrap();
        assert_eq!(cost, expected_cost(a, ProviderKind::Bedrock, "us-east-1"), "{a}");
        let anthropic_price = PriceTable::builtin().get("claude-sonnet-4-5").unwrap().clone();
        let t = &a["tokens"];
        let direct = anthropic_price
            .cost(&Usage {
                input_tokens: t["input"].as_u64().unwrap(),
                output_tokens: t["output"].as_u64().unwrap(),
                ..Default::default()
            })
            .micro_usd_ceil();
        assert!(
            cost > direct,
            "Bedrock {cost} vs Anthropic {direct}: the profile's own price applies"
        );
    }
    assert!(cost_metric(&rig, "bedrock").await > 0);
    let logs = rig.proxy.logs();
    assert!(
        !logs.contains(&rig.bedrock.options.secret_access_key),
        "secret in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_and_foundry_serve_with_tokens_they_issued() {
    let rig = rig().await;
    for stream in [false, true] {
        let r = messages(&rig, "gw-vertex", stream, &[]).await;
        assert_eq!(r.status, 200, "vertex stream={stream}: {}", r.text());
        let r2 = messages(&rig, "gw-foundry", stream, &[]).await;
        assert_eq!(r2.status, 200, "foundry stream={stream}: {}", r2.text());
        for reply in [r, r2] {
            let text = if stream {
                sse_text_and_usage(&reply.text()).0
            } else {
                reply.json()["content"][0]["text"].as_str().unwrap().to_owned()
            };
            assert_eq!(text, DEFAULT_REPLY);
        }
    }
    // One token minted from the service-account key, used for both calls (cached).
    let vertex = rig.vertex.records();
    let token_calls = vertex.iter().filter(|r| r["path"] == "/token").count();
    let model_calls: Vec<&Value> = vertex
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.contains(":rawPredict") || p.contains(":streamRawPredict"))
        })
        .collect();
    assert_eq!(token_calls, 1, "{vertex:?}");
    assert_eq!(model_calls.len(), 2, "{vertex:?}");
    assert!(
        model_calls
            .iter()
            .any(|r| r["path"].as_str().unwrap().ends_with(":streamRawPredict")),
        "{vertex:?}"
    );
    // Foundry: one Entra token (client credentials), sent as a Bearer on both calls.
    let foundry = rig.foundry.records();
    let entra = foundry
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/oauth2/v2.0/token"))
        })
        .count();
    let calls: Vec<&Value> = foundry
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/anthropic/v1/messages"))
        })
        .collect();
    assert_eq!(entra, 1, "{foundry:?}");
    assert_eq!(calls.len(), 2, "{foundry:?}");
    for c in &calls {
        let auth = c["headers"]["authorization"].as_str().unwrap_or("");
        assert!(auth.starts_with("Bearer ") && !auth.contains(KEY_ALICE), "{c}");
        assert!(c["headers"].get("api-key").is_none(), "{c}");
    }
    let audit = audited(&rig, 4).await;
    let providers: Vec<&str> = audit.iter().filter_map(|a| a["provider"].as_str()).collect();
    assert_eq!(
        providers.iter().filter(|p| **p == "vertex").count(),
        2,
        "{audit:?}"
    );
    assert_eq!(
        providers.iter().filter(|p| **p == "foundry").count(),
        2,
        "{audit:?}"
    );
    for a in audit.iter().filter(|a| a["provider"] == "vertex") {
        assert_eq!(a["upstream_model"], VERTEX_MODEL);
        // Vertex's own price at a regional endpoint (us-east5: the regional uplift).
        assert_eq!(
            a["cost_micro_usd"].as_u64().unwrap(),
            expected_cost(a, ProviderKind::Vertex, "us-east5"),
            "{a}"
        );
    }
    for a in audit.iter().filter(|a| a["provider"] == "foundry") {
        assert_eq!(
            a["cost_micro_usd"].as_u64().unwrap(),
            expected_cost(a, ProviderKind::Foundry, ""),
            "{a}"
        );
    }
    // count_tokens through Vertex.
    let r = send(
        "POST",
        &format!("{}/anthropic/v1/messages/count_tokens", rig.proxy.base_url()),
        &[
            ("authorization", &format!("Bearer {KEY_ALICE}")),
            ("anthropic-version", "2023-06-01"),
        ],
        Bytes::from(r#"{"model":"gw-vertex","messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_529_falls_back_to_bedrock_and_the_audit_names_bedrock() {
    let rig = rig().await;
    // The scenario header reaches only the direct Anthropic target (the Bedrock module sends
    // AWS nothing of the client's headers), so Anthropic answers 529 and Bedrock serves.
    let r = messages(&rig, "gw-fallback", true, &[(SCENARIO_HEADER, "status-529")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sse_text_and_usage(&r.text()).0, DEFAULT_REPLY);
    let audit = audited(&rig, 1).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["provider"], "bedrock");
    assert_eq!(audit[0]["upstream_model"], BEDROCK_MODEL);
    assert_eq!(audit[0]["model"], "gw-fallback");
    let metrics = rig.proxy.metrics().await.unwrap();
    assert!(
        metrics.contains(r#"tollgate_upstream_fallbacks_total{provider="anthropic",result="taken"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_fallbacks_and_refusals_reach_the_client() {
    let rig = rig().await;
    // `flaky` allows 1 fallback per second and saves none: of 6 failing requests in quick
    // succession, the first falls back to Bedrock and the rest get the provider's 529.
    let mut served = 0;
    let mut overloaded = 0;
    for _ in 0..6 {
        let r = messages(&rig, "gw-budgeted", false, &[(SCENARIO_HEADER, "status-529")]).await;
        match r.status {
            200 => served += 1,
            529 => overloaded += 1,
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert!(
        (1..=2).contains(&served),
        "served {served}, overloaded {overloaded}"
    );
    assert_eq!(served + overloaded, 6);
    let metrics = rig.proxy.metrics().await.unwrap();
    assert!(
        metrics.contains(r#"tollgate_upstream_fallbacks_total{provider="flaky",result="refused"}"#),
        "{metrics}"
    );
    // Five consecutive failures ejected `flaky`: the next request goes to Bedrock first,
    // without touching it.
    assert!(
        metrics.contains(r#"tollgate_provider_ejections_total{provider="flaky"} 1"#),
        "{metrics}"
    );
    let before = rig.fake.requests().len();
    let bedrock_before = rig.bedrock.records().len();
    let r = messages(&rig, "gw-budgeted", false, &[(SCENARIO_HEADER, "status-529")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rig.bedrock.records().len(), bedrock_before + 1);
    assert_eq!(
        rig.fake.requests().len(),
        before + 1,
        "only Bedrock's own upstream call reached the fake, not a flaky attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_targets_share_the_load() {
    let rig = rig().await;
    let n = 40;
    for _ in 0..n {
        let r = messages(&rig, "gw-weighted", false, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let audit = audited(&rig, n).await;
    let vertex = audit.iter().filter(|a| a["provider"] == "vertex").count();
    let anthropic = audit.iter().filter(|a| a["provider"] == "anthropic").count();
    assert_eq!(vertex + anthropic, n, "{audit:?}");
    // 3:1, so about 10 of 40 on Vertex; the chance of 3 or fewer, or 20 or more, is < 1e-3.
    assert!(
        (4..20).contains(&vertex),
        "vertex {vertex}, anthropic {anthropic}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_become_anthropic_errors_claude_code_understands() {
    let rig = rig().await;
    // Bedrock's ThrottlingException -> 429 rate_limit_error; Vertex's RESOURCE_EXHAUSTED ->
    // 429; a prompt-too-long ValidationException keeps its wording.
    for model in ["gw-bedrock", "gw-vertex"] {
        let r = messages(&rig, model, false, &[]).await;
        assert_eq!(r.status, 200);
        let msg = json!({
            "model": model, "max_tokens": 64,
            "messages": [{"role": "user", "content": "[[scenario:status-429]]"}],
        });
        let r = send(
            "POST",
            &format!("{}/anthropic/v1/messages", rig.proxy.base_url()),
            &[
                ("authorization", &format!("Bearer {KEY_ALICE}")),
                ("anthropic-version", "2023-06-01"),
            ],
            Bytes::from(msg.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 429, "{model}: {}", r.text());
        assert_eq!(r.json()["type"], "error", "{model}");
        assert_eq!(
            r.json()["error"]["type"],
            "rate_limit_error",
            "{model}: {}",
            r.text()
        );
        let msg = json!({
            "model": model, "max_tokens": 64,
            "messages": [{"role": "user", "content": "[[scenario:status-400]]"}],
        });
        let r = send(
            "POST",
            &format!("{}/anthropic/v1/messages", rig.proxy.base_url()),
            &[
                ("authorization", &format!("Bearer {KEY_ALICE}")),
                ("anthropic-version", "2023-06-01"),
            ],
            Bytes::from(msg.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400, "{model}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{model}");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("prompt is too long"),
            "{model}: {}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_a_tool_loop_on_bedrock_and_on_vertex() {
    let Some(claude) = claude_bin() else { return };
    for cloud in ["bedrock", "vertex"] {
        let rig = rig_with_tiers(cloud).await;
        let base = format!("{}/anthropic", rig.proxy.base_url());
        let run = tokio::task::block_in_place(|| {
            run_claude(
                &claude,
                &["-p", "run echo TOOL_OK", "--allowedTools", "Bash(echo:*)"],
                &[
                    ("ANTHROPIC_BASE_URL", base.as_str()),
                    ("ANTHROPIC_AUTH_TOKEN", KEY_ALICE),
                ],
                None,
            )
        });
        assert!(
            !run.is_error(),
            "{cloud}: stdout {} stderr {}\nproxy logs:\n{}",
            run.stdout,
            run.stderr,
            rig.proxy.logs()
        );
        assert!(
            run.result().contains("Tool said: TOOL_OK"),
            "{cloud}: {}",
            run.stdout
        );
        // Every model call went through the cloud (none straight to Anthropic), and the tool
        // loop took at least two of them.
        let calls = rig
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.path == "/v1/messages")
            .count();
        let cloud_calls = match cloud {
            "bedrock" => rig
                .bedrock
                .records()
                .iter()
                .filter(|r| {
                    r["path"].as_str().is_some_and(|p| p.starts_with("/model/")) && r["signature_ok"] == true
                })
                .count(),
            _ => rig
                .vertex
                .records()
                .iter()
                .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("Predict")) && r["status"] == 200)
                .count(),
        };
        assert!(
            calls >= 2,
            "{cloud}: a tool loop is at least two model calls, saw {calls}"
        );
        assert_eq!(
            cloud_calls, calls,
            "{cloud}: every model call went through the cloud"
        );
        let audit = audited(&rig, calls).await;
        assert!(audit.iter().all(|a| a["provider"] == cloud), "{cloud}: {audit:?}");
        let m = rig.proxy.metrics().await.unwrap();
        assert!(cost_metric(&rig, cloud).await > 0, "{m}");
        assert!(
            !m.contains("tollgate_unpriced_responses_total{"),
            "{cloud}: every tier is priced\n{m}"
        );
    }
}

async fn raw(rig: &Rig, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut h = vec![
        ("authorization", format!("Bearer {KEY_ALICE}")),
        ("anthropic-version", "2023-06-01".to_owned()),
    ];
    h.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send(
        "POST",
        &format!("{}/anthropic/v1/messages", rig.proxy.base_url()),
        &h,
        Bytes::from(body.to_owned()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_no_provider_accepts_are_the_clients_fault_not_the_providers() {
    let rig = rig().await;
    // A JSON array (serde would read it as the fields in order), and a model id that cannot
    // be a URL path segment on a pass-through route: 400 each, nothing sent upstream, and no
    // failure of the shared provider (ten of them would otherwise eject it and spend its
    // retry budget for every tenant).
    for _ in 0..10 {
        let r = raw(&rig, &[], r#"["gw-vertex", false, 16]"#).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        let r = raw(
            &rig,
            &[],
            r#"{"model": "..", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}"#,
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            r.json()["error"]["message"].as_str().unwrap().contains("model"),
            "{}",
            r.text()
        );
    }
    // Too many beta flags: refused before any work (the Bedrock module merges them).
    let betas: Vec<String> = (0..1000).map(|i| format!("b{i}")).collect();
    let r = raw(
        &rig,
        &[("anthropic-beta", &betas.join(","))],
        std::str::from_utf8(&body("gw-bedrock", false)).unwrap(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-beta")
    );
    let metrics = rig.proxy.metrics().await.unwrap();
    assert!(
        !metrics.contains("tollgate_provider_ejections_total{"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tollgate_upstream_fallbacks_total{"),
        "{metrics}"
    );
    assert!(
        rig.vertex
            .records()
            .iter()
            .all(|r| !r["path"].as_str().unwrap_or("").contains("Predict"))
    );
    // The provider still serves.
    let r = messages(&rig, "gw-vertex", false, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_provider_key_is_a_502_that_falls_back_never_the_clients_401() {
    let rig = rig().await;
    let r = messages(&rig, "gw-badkey-only", false, &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "api_error");
    assert!(
        r.json()["error"]["message"].as_str().unwrap().contains("badkey"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("sk-ant-not-the-upstream-key"));
    let r = messages(&rig, "gw-badkey", true, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sse_text_and_usage(&r.text()).0, DEFAULT_REPLY);
    let audit = audited(&rig, 2).await;
    assert!(audit.iter().any(|a| a["provider"] == "bedrock"), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bedrock_stream_cut_before_message_stop_ends_with_an_error_event() {
    let rig = rig().await;
    let r = messages(&rig, "gw-bedrock", true, &[]).await;
    assert_eq!(r.status, 200);
    let msg = json!({
        "model": "gw-bedrock", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "[[scenario:cut]]"}],
    });
    let r = raw(&rig, &[], &msg.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(!text.contains("event: message_stop"), "{text}");
    assert!(
        text.trim_end()
            .ends_with(r#""message":"Bedrock's event stream ended before message_stop"}}"#),
        "{text}"
    );
}
