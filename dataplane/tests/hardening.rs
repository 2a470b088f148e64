//! Billing and abuse hardening, through the real `tollgate-proxy` binary and the fake upstream:
//! aborted requests release what they hold, cut responses are charged at least what they
//! delivered, metric labels stay bounded, malformed requests are refused as the API would,
//! model rules see the routed model, and count_tokens is rate-limited and audited.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig, big_reply_text};
use tollgate_tests::harness::{Proxy, Reply, open, send};
use tollgate_tests::policy::{PROVIDER_KEY, PROVIDER_KEY_ENV, sha256_hex};

const KEY_A: &str = "tg_hardening_SECRET_key_a_0001";
const KEY_B: &str = "tg_hardening_SECRET_key_b_0002";
const KEY_NO_OPUS: &str = "tg_hardening_SECRET_no_opus_03";
const KEY_ALIASES: &str = "tg_hardening_SECRET_aliases_04";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

/// A policy with key `a` (team platform; `a_extra` is spliced into its entry), key `b`, key
/// `no-opus` (denies `claude-opus-*`) and key `aliases` (allows only `gw-haiku`), the tier
/// aliases and a passthrough route, plus `extra` top-level sections.
fn policy(upstream: &str, a_extra: &str, extra: &str) -> String {
    format!(
        r#"version: 1
organization: {{name: acme}}
teams: [{{id: platform}}]
keys:
  - {{id: a, sha256: {a}, user: a@acme.example, team: platform{a_extra}}}
  - {{id: b, sha256: {b}, team: platform}}
  - {{id: no-opus, sha256: {no_opus}, team: platform, models: {{deny: ["claude-opus-*"]}}}}
  - {{id: aliases, sha256: {aliases}, team: platform, models: {{allow: [gw-haiku]}}}}
providers:
  - {{id: fake, kind: anthropic, endpoint: "{upstream}", credential: {{env: {PROVIDER_KEY_ENV}}}, timeouts: {{stream_idle_ms: 10000}}}}
routes:
  - {{match: gw-opus, targets: [{{provider: fake, model: claude-opus-4-8}}]}}
  - {{match: gw-haiku, targets: [{{provider: fake, model: claude-haiku-4-5}}]}}
  - {{match: "claude-*", targets: [{{provider: fake}}]}}
{extra}"#,
        a = sha256_hex(KEY_A),
        b = sha256_hex(KEY_B),
        no_opus = sha256_hex(KEY_NO_OPUS),
        aliases = sha256_hex(KEY_ALIASES),
    )
}

struct Rig {
    fake: FakeAnthropic,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn start(cfg: FakeConfig, a_extra: &str, extra: &str, args: &[&str]) -> Rig {
        let fake = FakeAnthropic::start(cfg).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, policy(&fake.base_url(), a_extra, extra)).unwrap();
        let proxy = Proxy::start_with_args(&bin(), &file, &[(PROVIDER_KEY_ENV, PROVIDER_KEY)], args).unwrap();
        Rig { fake, proxy, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.base_url())
    }

    async fn messages(&self, key: &str, body: &Value, extra: &[(&str, &str)]) -> Reply {
        let auth = format!("Bearer {key}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        send(
            "POST",
            &self.url("/v1/messages"),
            &headers,
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap()
    }

    async fn open_stream(&self, body: &Value, scenario: &str) -> http::Response<hyper::body::Incoming> {
        open(
            "POST",
            &self.url("/v1/messages"),
            &[
                ("x-api-key", KEY_A),
                ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"),
                ("x-fake-scenario", scenario),
            ],
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap()
    }

    /// The `request completed` log line of request `id`, once it is written.
    async fn completed(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.proxy.logs().lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "request completed" && v["span"]["request_id"] == id)
                    .then(|| v["fields"].clone())
            });
            if let Some(f) = found {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "request {id} never completed:\n{}",
                self.proxy.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn spend(&self) -> Vec<Value> {
        let r = send(
            "GET",
            &format!("{}/admin/spend", self.proxy.admin_url()),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
        r.json()["budgets"].as_array().cloned().unwrap_or_default()
    }
}

fn body(model: &str, max_tokens: u64, stream: bool, prompt: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    })
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers["x-tollgate-request-id"].to_str().unwrap().to_owned()
}

/// The text of every `text_delta` in the complete SSE events of `raw`.
fn streamed_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let complete = &text[..text.rfind("\n\n").map_or(0, |i| i + 2)];
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

// ---------------------------------------------------------------------------------------
// 1. An abort before the response headers releases the slot and the reservation at once.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_before_the_response_headers_releases_the_slot_and_the_reservation_at_once() {
    let mut cfg = FakeConfig::new(PROVIDER_KEY);
    cfg.header_delay = Duration::from_secs(3);
    let budget = "budgets:\n  - {id: a-daily, scope: {kind: key, name: a}, limit_micro_usd: 10000000, period: daily}\n";
    let rig = Rig::start(cfg, ", rate_limits: {concurrent: 1}", budget, &[]).await;
    let req = body("claude-sonnet-4-5", 1000, false, "say hi");

    // The client gives up after 1 s; the upstream would answer only after 3 s.
    let aborted = tokio::time::timeout(
        Duration::from_secs(1),
        rig.messages(KEY_A, &req, &[("x-fake-scenario", "slow-headers")]),
    )
    .await;
    assert!(
        aborted.is_err(),
        "the upstream answered before the client gave up"
    );
    let gave_up = Instant::now();

    // Nothing stays reserved, well before the upstream would have answered.
    loop {
        let b = rig.spend().await;
        if b[0]["reserved_micro_usd"] == 0 {
            break;
        }
        assert!(
            gave_up.elapsed() < Duration::from_millis(1500),
            "the reservation is still held after the client left: {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slot is free: the next request is served, not refused as "concurrent".
    let r = rig.messages(KEY_A, &req, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        gave_up.elapsed() < Duration::from_secs(2),
        "served only after the upstream answered"
    );
    // The request had reached the upstream, which may bill what it generates for nobody:
    // the whole reservation is charged (input estimate and max_tokens of output, nothing
    // learned yet), never only the input.
    let logs = rig.proxy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("request abandoned before the response"))
        .unwrap_or_else(|| panic!("no abandonment logged:\n{logs}"));
    let v: Value = serde_json::from_str(line).unwrap();
    let body_len = req.to_string().len() as u64;
    let charged =
        v["fields"]["input_tokens"].as_u64().unwrap() + v["fields"]["output_tokens"].as_u64().unwrap();
    assert_eq!(charged, body_len.div_ceil(3) + 1000, "{line}");
}

// ---------------------------------------------------------------------------------------
// 2. A cut response is charged at least what was delivered.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_response_is_charged_at_least_what_it_delivered() {
    let rig = Rig::start(
        FakeConfig::new(PROVIDER_KEY),
        ", tools: {deny: [Forbidden]}",
        "",
        &[],
    )
    .await;
    let big_words = words(big_reply_text());
    let req = body("claude-sonnet-4-5", 64_000, true, "write at length");

    // The whole stream, read to its end: the upstream's own usage.
    let resp = rig.open_stream(&req, "big").await;
    let id = request_id(resp.headers());
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&raw).contains("message_stop"));
    let full = rig.completed(&id).await;
    assert_eq!(full["usage_estimated"], false, "{full}");
    assert_eq!(full["output_tokens"], big_words, "{full}");
    let full_cost = full["cost_micro_usd"].as_u64().unwrap();

    // The same stream cut just before message_delta: every word was delivered.
    let resp = rig.open_stream(&req, "big-cut").await;
    let id = request_id(resp.headers());
    assert!(
        resp.into_body().collect().await.is_err(),
        "the cut reaches the client"
    );
    let cut = rig.completed(&id).await;
    assert_eq!(cut["usage_estimated"], true, "{cut}");
    assert!(cut["output_tokens"].as_u64().unwrap() >= big_words, "{cut}");
    assert!(
        cut["cost_micro_usd"].as_u64().unwrap() >= full_cost,
        "cut {cut} cheaper than the full read ({full_cost})"
    );
    assert!(
        cut["output_tokens"].as_u64().unwrap() <= 64_000,
        "never above max_tokens: {cut}"
    );
    println!(
        "full read: {full_cost} micro-USD for {big_words} output tokens; cut before message_delta: {} for {}",
        cut["cost_micro_usd"], cut["output_tokens"]
    );

    // The client reads about 20 KB and closes the connection.
    let resp = rig.open_stream(&req, "big").await;
    let id = request_id(resp.headers());
    let mut stream = resp.into_body();
    let mut seen = Vec::new();
    while seen.len() < 20_000 {
        let frame = stream.frame().await.unwrap().unwrap();
        if let Ok(d) = frame.into_data() {
            seen.extend_from_slice(&d);
        }
    }
    drop(stream);
    let delivered = words(&streamed_text(&seen));
    assert!(delivered > 100, "{delivered} words read");
    let gone = rig.completed(&id).await;
    assert_eq!(gone["outcome"], "client_gone", "{gone}");
    assert_eq!(gone["usage_estimated"], true, "{gone}");
    assert!(
        gone["output_tokens"].as_u64().unwrap() >= delivered,
        "charged {gone} for {delivered} words delivered"
    );

    // The tool guard stops the stream at a forbidden tool call, after the long text.
    let guarded = body_with_marker("[[tool_use:Forbidden]]");
    let resp = rig.open_stream(&guarded, "big").await;
    let id = request_id(resp.headers());
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("permission_error"), "guard did not cut");
    assert_eq!(words(&streamed_text(&raw)), big_words);
    let cut = rig.completed(&id).await;
    assert_eq!(cut["usage_estimated"], true, "{cut}");
    assert!(cut["output_tokens"].as_u64().unwrap() >= big_words, "{cut}");

    // A JSON body over the 16 MiB usage tap: charged from its size, up to max_tokens.
    let huge = body("claude-sonnet-4-5", 128_000, false, "write a book");
    let resp = rig
        .messages(KEY_A, &huge, &[("x-fake-scenario", "huge-json")])
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.len() > 16 << 20);
    let line = rig.completed(&request_id(&resp.headers)).await;
    assert_eq!(line["usage_estimated"], true, "{line}");
    assert_eq!(line["output_tokens"], 128_000, "{line}");
    assert!(line["input_tokens"].as_u64().unwrap() > 0, "{line}");
}

fn body_with_marker(marker: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64_000,
        "stream": true,
        "messages": [{"role": "user", "content": format!("write, then call {marker}")}],
        "tools": [{"name": "Forbidden", "input_schema": {"type": "object"}}],
    })
}

// ---------------------------------------------------------------------------------------
// 3. Metric labels stay bounded.
// ---------------------------------------------------------------------------------------

/// A cheap deterministic generator of random-looking names.
struct Names(u64);

impl Names {
    fn next(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ALPHABET[(self.0 % ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }
}

async fn mcp(rig: &Rig, session: Option<&str>, body: Value) -> Reply {
    let auth = format!("Bearer {KEY_A}");
    let mut h = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    if let Some(s) = session {
        h.push(("mcp-session-id", s));
    }
    send("POST", &rig.url("/mcp"), &h, Bytes::from(body.to_string()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_model_and_tool_names_grow_metrics_by_less_than_10_kb() {
    let mut cfg = FakeConfig::new(PROVIDER_KEY);
    cfg.record = false;
    let rig = Rig::start(
        cfg,
        ", mcp: [{server: fs, allow: [\"read_*\"]}]",
        "mcp_servers:\n  - {name: fs, url: \"http://127.0.0.1:9/mcp\"}\n",
        &[],
    )
    .await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = mcp(&rig, None, init).await;
    let sid = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let call = |id: u64, name: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": {}}})
    };
    // One of each first, so every series family exists before measuring.
    let mut names = Names(0x9E37_79B9_7F4A_7C15);
    let r = rig
        .messages(KEY_A, &body("claude-warmup", 10, false, "hi"), &[])
        .await;
    assert_eq!(r.status, 200);
    let r = mcp(&rig, Some(&sid), call(1, "fs__write_warmup")).await;
    assert_eq!(r.json()["error"]["code"], -32602, "{:?}", r.json());
    let before = rig.proxy.metrics().await.unwrap().len();

    for i in 0..1000u64 {
        let model = format!("claude-{}", names.next(48));
        let r = rig.messages(KEY_A, &body(&model, 10, false, "hi"), &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let tool = format!("fs__{}", names.next(48));
        let r = mcp(&rig, Some(&sid), call(i + 2, &tool)).await;
        assert_eq!(r.json()["error"]["code"], -32602, "{:?}", r.json());
    }
    // Model names the size of a prompt are not model names.
    for _ in 0..5 {
        let model = format!("claude-{}", names.next(40 << 10));
        let r = rig.messages(KEY_A, &body(&model, 10, false, "hi"), &[]).await;
        assert_eq!(r.status, 400, "a 40 KB model name was served");
    }
    let text = rig.proxy.metrics().await.unwrap();
    let grown = text.len().saturating_sub(before);
    println!("/metrics: {before} bytes before, grew by {grown}");
    assert!(grown < 10 << 10, "/metrics grew by {grown} bytes:\n{text}");
    assert!(
        text.contains(r#"model="other""#) && text.contains(r#"tool="other""#),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Malformed requests.
// ---------------------------------------------------------------------------------------

/// Sends a raw request head (and a byte of body) and returns the status line, if one comes
/// within `within`.
async fn raw_status(addr: std::net::SocketAddr, head: &str, within: Duration) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(b"{").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, s.read(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

fn assert_error(r: &Reply, status: u16, error_type: &str, needle: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], error_type, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_at_once_as_the_api_would() {
    let rig = Rig::start(FakeConfig::new(PROVIDER_KEY), "", "", &[]).await;

    // A declared body of 1 TB: 413 at once, not after waiting for the body.
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY_A}\r\nanthropic-version: 2023-06-01\r\n\
         content-type: application/json\r\ncontent-length: 1000000000000\r\n\r\n"
    );
    let started = Instant::now();
    let status = raw_status(rig.proxy.addr, &head, Duration::from_secs(3)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 413 Payload Too Large"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let ok = body("claude-sonnet-4-5", 100, false, "hi");
    let url = rig.url("/v1/messages");
    let post = |headers: Vec<(&'static str, String)>, b: Value| {
        let url = url.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send("POST", &url, &h, Bytes::from(b.to_string())).await.unwrap()
        }
    };
    let version = ("anthropic-version", "2023-06-01".to_owned());
    let json_ct = ("content-type", "application/json".to_owned());

    // Two different keys: refused. The same key in both headers: accepted.
    let r = post(
        vec![
            ("authorization", format!("Bearer {KEY_A}")),
            ("x-api-key", KEY_B.to_owned()),
            version.clone(),
            json_ct.clone(),
        ],
        ok.clone(),
    )
    .await;
    assert_error(&r, 401, "authentication_error", "different");
    let r = post(
        vec![
            ("authorization", format!("Bearer {KEY_A}")),
            ("x-api-key", KEY_A.to_owned()),
            version.clone(),
            json_ct.clone(),
        ],
        ok.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let served = rig.fake.requests().len();

    // Model names with control characters.
    for model in ["claude-sonnet-4-5\u{0}", "claude-sonnet\n-4-5", "claude-\u{7f}x"] {
        let r = rig.messages(KEY_A, &body(model, 100, false, "hi"), &[]).await;
        assert_error(&r, 400, "invalid_request_error", "model");
    }
    // max_tokens beyond any model's output limit.
    let r = rig
        .messages(
            KEY_A,
            &body("claude-sonnet-4-5", 1_000_000_000_000, false, "hi"),
            &[],
        )
        .await;
    assert_error(&r, 400, "invalid_request_error", "max_tokens");
    // A body that is not declared as JSON.
    let r = post(
        vec![
            ("x-api-key", KEY_A.to_owned()),
            version.clone(),
            ("content-type", "text/plain".to_owned()),
        ],
        ok.clone(),
    )
    .await;
    assert_error(&r, 400, "invalid_request_error", "content-type");
    // No anthropic-version.
    let r = post(vec![("x-api-key", KEY_A.to_owned()), json_ct.clone()], ok.clone()).await;
    assert_error(
        &r,
        400,
        "invalid_request_error",
        "anthropic-version: header is required",
    );
    assert_eq!(r.headers["x-should-retry"], "false");
    assert_eq!(
        rig.fake.requests().len(),
        served,
        "no malformed request reached the upstream"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Model rules see the routed model too.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_rules_apply_to_the_routed_model_too() {
    let rig = Rig::start(FakeConfig::new(PROVIDER_KEY), "", "", &[]).await;
    // `no-opus` denies claude-opus-*; gw-opus routes there.
    let r = rig
        .messages(KEY_NO_OPUS, &body("gw-opus", 100, false, "hi"), &[])
        .await;
    assert_error(&r, 403, "permission_error", "claude-opus-4-8");
    let r = rig
        .messages(KEY_NO_OPUS, &body("claude-opus-4-8", 100, false, "hi"), &[])
        .await;
    assert_eq!(r.status, 403);
    assert!(rig.fake.requests().is_empty(), "Opus was reached");
    let r = send(
        "GET",
        &rig.url("/v1/models"),
        &[("x-api-key", KEY_NO_OPUS)],
        Bytes::new(),
    )
    .await
    .unwrap();
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"gw-haiku".to_owned()), "{ids:?}");
    assert!(!ids.iter().any(|m| m.contains("opus")), "{ids:?}");
    let r = send(
        "GET",
        &rig.url("/v1/models/gw-opus"),
        &[("x-api-key", KEY_NO_OPUS)],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);

    // Other aliases keep working, and an allow list of aliases only still serves them.
    let r = rig
        .messages(KEY_NO_OPUS, &body("gw-haiku", 100, false, "hi"), &[])
        .await;
    assert_eq!(r.status, 200);
    let r = rig
        .messages(KEY_ALIASES, &body("gw-haiku", 100, false, "hi"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = rig
        .messages(KEY_ALIASES, &body("claude-haiku-4-5", 100, false, "hi"), &[])
        .await;
    assert_eq!(r.status, 403, "the allow list names the alias only");
}

// ---------------------------------------------------------------------------------------
// 7. count_tokens is rate-limited and audited.
// ---------------------------------------------------------------------------------------

fn spooled(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, seg) in tollgate_dataplane::audit::spool::list_segments(dir).unwrap() {
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            if let Ok(v) = serde_json::from_str(line) {
                out.push(v);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_is_rate_limited_and_audited() {
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = spool_dir.path().join("spool");
    let rig = Rig::start(
        FakeConfig::new(PROVIDER_KEY),
        ", rate_limits: {requests_per_minute: 2, tokens_per_minute: 1}",
        "",
        &["--audit-dir", spool.to_str().unwrap()],
    )
    .await;
    let count = |key: &'static str| {
        let url = rig.url("/anthropic/v1/messages/count_tokens");
        async move {
            send(
                "POST",
                &url,
                &[
                    ("x-api-key", key),
                    ("anthropic-version", "2023-06-01"),
                    ("content-type", "application/json"),
                ],
                Bytes::from(
                    json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                ),
            )
            .await
            .unwrap()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(count(KEY_A).await.status);
    }
    // A minute boundary between the calls resets the window: then all three pass.
    if statuses != [200, 200, 200] {
        assert_eq!(
            statuses,
            [200, 200, 429],
            "tokens per minute do not apply, requests do"
        );
    }
    // Another key is not limited by a's counters.
    assert_eq!(count(KEY_B).await.status, 200);
    assert!(rig.proxy.terminate().is_ok());

    let records = spooled(&spool);
    let counted: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "model_request" && r["body"]["endpoint"] == "count_tokens")
        .collect();
    let served = statuses.iter().filter(|s| **s == 200).count() + 1;
    assert_eq!(counted.len(), served, "{records:#?}");
    let b = &counted[0]["body"];
    assert_eq!(b["key_id"], "a");
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["status"], 200);
    assert_eq!(b["cost_micro_usd"], 0);
    if statuses[2] == 429 {
        assert!(
            records
                .iter()
                .any(|r| r["kind"] == "denial" && r["body"]["reason"] == "rate_limited_requests"),
            "{records:#?}"
        );
    }
    drop(rig.dir);
}
