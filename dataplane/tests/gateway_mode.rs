//! Gateway mode, end to end with real processes: credential-free sidecars forward everything
//! to one gateway `tollgate-proxy`, which holds the provider key, the budgets, the rate limits
//! and the MCP servers.
//!
//! - The gateway: provider `anthropic` (the fake upstream) with the key
//!   `sk-ant-gateway-secret-XYZ` from its environment, the keys, a team budget when a test
//!   asks, MCP server `alpha` when a test asks. Its ledger is the embedded one: it is a single
//!   process, so it already is the one truth every sidecar's requests are admitted against
//!   (the shared Redis ledger across gateway replicas is `limits_redis.rs`'s subject).
//! - Two sidecars: the same key hashes and model allowlists, one provider of kind `tollgate`
//!   pointing at the gateway, one route `*` to it, `mcp_gateway` set; no credential, budget,
//!   rate limit or audit anywhere in their policy, files or environment.
//!
//! Keys: `alice` (every model), `haiku-only` (allowlist), `stale` (enabled at the sidecars,
//! disabled at the gateway: a sidecar whose policy copy lags), `dropped` (only the sidecars
//! still have it), `limited` (one request per minute at the gateway).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_dataplane::pricing::PriceTable;
use tollgate_dataplane::usage::Usage;
use tollgate_tests::claude::{ClaudeRun, claude_bin, run_claude};
use tollgate_tests::fake_anthropic::{DEFAULT_REPLY, FakeAnthropic, FakeConfig, RETRY_AFTER_SECS, Scenario};
use tollgate_tests::harness::{Proxy, Reply, open, send};
use tollgate_tests::mcp::{McpUpstream, free_port, run_client};
use tollgate_tests::policy::{KEY_ALICE, KEY_HAIKU, sha256_hex};

/// The provider key: only the gateway ever has it.
const GATEWAY_SECRET: &str = "sk-ant-gateway-secret-XYZ";
/// The gateway's environment variable holding it (as the chart sets it from a Secret).
const GATEWAY_SECRET_ENV: &str = "TOLLGATE_ANTHROPIC_API_KEY";
/// Enabled in the sidecars' policy, disabled in the gateway's.
const KEY_STALE: &str = "tg_stale_SECRET_virtual_key_0011";
/// In the sidecars' policy only: the gateway dropped it.
const KEY_DROPPED: &str = "tg_dropped_SECRET_virtual_key_0012";
/// One request per minute at the gateway; no limit at the sidecars.
const KEY_LIMITED: &str = "tg_limited_SECRET_virtual_key_0013";
/// In no policy at all.
const KEY_UNKNOWN: &str = "tg_unknown_SECRET_virtual_key_0014";
/// The MCP server's own credential, held by the gateway.
const ALPHA_TOKEN: &str = "sk-mcp-alpha-gateway-SECRET";

/// The team budget of the race test, micro-USD.
const LIMIT: u64 = 5_000;
/// `max_tokens` of the race test's requests.
const MAX_TOKENS: u64 = 10;

/// `req_tg_` and the 16 hex digits every request id of one proxy process starts with.
const ID_PREFIX_LEN: usize = 23;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

/// The keys, as the gateway (`at_gateway`) or a sidecar has them: same hashes and allowlists.
fn keys(at_gateway: bool) -> String {
    let h = sha256_hex;
    let (stale_enabled, limited_limits, dropped) = if at_gateway {
        ("false", ", rate_limits: {requests_per_minute: 1}", String::new())
    } else {
        (
            "true",
            "",
            format!(
                "  - {{id: dropped, sha256: {}, team: platform}}\n",
                h(KEY_DROPPED)
            ),
        )
    };
    format!(
        r#"keys:
  - {{id: alice, sha256: {alice}, user: alice@acme.example, team: platform}}
  - {{id: haiku-only, sha256: {haiku}, team: platform, models: {{allow: [gw-haiku, "claude-haiku-*"]}}}}
  - {{id: stale, sha256: {stale}, team: platform, enabled: {stale_enabled}}}
  - {{id: limited, sha256: {limited}, team: platform{limited_limits}}}
{dropped}"#,
        alice = h(KEY_ALICE),
        haiku = h(KEY_HAIKU),
        stale = h(KEY_STALE),
        limited = h(KEY_LIMITED),
    )
}

/// What one test adds to the gateway's policy.
#[derive(Default)]
struct GatewayExtras {
    /// A daily budget of this many micro-USD on team `platform`.
    team_budget: Option<u64>,
    /// MCP server `alpha` at this URL, granted to the team for `read_*` and `list_*`.
    mcp_url: Option<String>,
}

fn gateway_policy(upstream: &str, extras: &GatewayExtras) -> String {
    let grant = if extras.mcp_url.is_some() {
        r#", mcp: [{server: alpha, allow: ["read_*", "list_*"]}]"#
    } else {
        ""
    };
    let mut doc = format!(
        r#"version: 1
organization: {{name: acme}}
teams: [{{id: platform{grant}}}]
{keys}providers:
  - {{id: anthropic, kind: anthropic, endpoint: "{upstream}", credential: {{env: {GATEWAY_SECRET_ENV}}}, timeouts: {{stream_idle_ms: 5000}}}}
routes:
  - {{match: gw-haiku, targets: [{{provider: anthropic, model: claude-haiku-4-5}}]}}
  - {{match: "claude-*", targets: [{{provider: anthropic}}]}}
"#,
        keys = keys(true),
    );
    if let Some(limit) = extras.team_budget {
        doc.push_str(&format!(
            "budgets:\n  - {{id: platform-day, scope: {{kind: team, name: platform}}, limit_micro_usd: {limit}, period: daily}}\n"
        ));
    }
    if let Some(url) = &extras.mcp_url {
        doc.push_str(&format!(
            "mcp_servers:\n  - {{name: alpha, url: \"{url}\", credential: {{env: ALPHA_MCP_TOKEN}}}}\n"
        ));
    }
    doc
}

/// A sidecar's policy: the keys, the gateway as its only provider, nothing else.
fn sidecar_policy(gateway: &str) -> String {
    format!(
        r#"version: 1
organization: {{name: acme}}
teams: [{{id: platform}}]
{keys}providers:
  - {{id: gateway, kind: tollgate, endpoint: "{gateway}"}}
routes:
  - {{match: "*", targets: [{{provider: gateway}}]}}
mcp_gateway: gateway
"#,
        keys = keys(false),
    )
}

/// Starts a sidecar on `policy` with nothing in its environment beyond what the test
/// process has (which holds no secret) and an in-memory ledger (it has no budget).
fn start_sidecar(policy: &Path) -> Proxy {
    Proxy::start_with_args(&bin(), policy, &[], &["--ledger", "memory"]).unwrap()
}

struct Rig {
    fake: FakeAnthropic,
    gateway: Proxy,
    sidecars: [Proxy; 2],
    /// Everything the sidecars were given on disk (their policy).
    sidecar_dir: tempfile::TempDir,
    _gateway_dir: tempfile::TempDir,
}

impl Rig {
    async fn start(fake: FakeConfig, extras: GatewayExtras) -> Rig {
        let fake = FakeAnthropic::start(fake).await.unwrap();
        let gateway_dir = tempfile::tempdir().unwrap();
        let policy = gateway_dir.path().join("policy.yaml");
        std::fs::write(&policy, gateway_policy(&fake.base_url(), &extras)).unwrap();
        let env = [
            (GATEWAY_SECRET_ENV, GATEWAY_SECRET),
            ("ALPHA_MCP_TOKEN", ALPHA_TOKEN),
        ];
        let gateway = Proxy::start(&bin(), &policy, &env).unwrap();
        let sidecar_dir = tempfile::tempdir().unwrap();
        let policy = sidecar_dir.path().join("policy.yaml");
        std::fs::write(&policy, sidecar_policy(&gateway.base_url())).unwrap();
        let sidecars = [start_sidecar(&policy), start_sidecar(&policy)];
        Rig {
            fake,
            gateway,
            sidecars,
            sidecar_dir,
            _gateway_dir: gateway_dir,
        }
    }

    async fn plain() -> Rig {
        Self::start(FakeConfig::new(GATEWAY_SECRET), GatewayExtras::default()).await
    }

    fn sidecar(&self, i: usize) -> String {
        self.sidecars[i].base_url()
    }

    /// Upstream `/v1/messages` calls, oldest first.
    fn upstream_calls(&self) -> Vec<tollgate_tests::fake_anthropic::RecordedRequest> {
        let mut calls = self.fake.requests();
        calls.retain(|c| c.path == "/v1/messages");
        calls
    }

    /// The gateway's and both sidecars' logs, for assertion messages.
    fn logs(&self) -> String {
        format!(
            "gateway:\n{}\nsidecar 0:\n{}\nsidecar 1:\n{}",
            self.gateway.logs(),
            self.sidecars[0].logs(),
            self.sidecars[1].logs()
        )
    }

    /// Runs Claude Code through sidecar `i` with `key`, off the async runtime.
    async fn claude(&self, claude: &Path, i: usize, key: &str, args: &[&str]) -> ClaudeRun {
        let (c, key) = (claude.to_owned(), key.to_owned());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let base = format!("{}/anthropic", self.sidecar(i));
        tokio::task::block_in_place(|| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let env = [
                ("ANTHROPIC_BASE_URL", base.as_str()),
                ("ANTHROPIC_AUTH_TOKEN", key.as_str()),
            ];
            run_claude(&c, &a, &env, None)
        })
    }
}

fn simple_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": MAX_TOKENS,
        "stream": stream,
        "messages": [{"role": "user", "content": "say hi"}],
    })
}

/// `POST {base}/anthropic/v1/messages?beta=true` as Claude Code sends it.
async fn messages(base: &str, key: &str, body: &Value, extra: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    send(
        "POST",
        &format!("{base}/anthropic/v1/messages?beta=true"),
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap()
}

/// A metric sample's value, or 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// The request-id prefix of the proxy that made `reply` (an Anthropic error body): every id
/// of one process starts with it.
fn id_prefix(reply: &Reply) -> String {
    let id = reply.json()["request_id"].as_str().unwrap_or_default().to_owned();
    assert!(
        id.starts_with("req_tg_") && id.len() > ID_PREFIX_LEN,
        "not a tollgate request id: {id:?}"
    );
    id[..ID_PREFIX_LEN].to_owned()
}

/// `relayed` is the refusal `direct` is, as the gateway made it: the same status, JSON (but
/// for the request id) and headers, and no header added on the way.
fn assert_same_refusal(direct: &Reply, relayed: &Reply) {
    assert_eq!(
        relayed.status,
        direct.status,
        "{}",
        String::from_utf8_lossy(&relayed.body)
    );
    let (mut a, mut b) = (direct.json(), relayed.json());
    assert_eq!(
        b["request_id"].as_str(),
        relayed.headers["request-id"].to_str().ok(),
        "the body's id is the header's"
    );
    assert_eq!(id_prefix(relayed), id_prefix(direct), "made by the gateway");
    a["request_id"] = Value::Null;
    b["request_id"] = Value::Null;
    assert_eq!(a, b, "the gateway's JSON, unchanged");
    let varying = ["request-id", "date"];
    for name in direct.headers.keys().filter(|n| !varying.contains(&n.as_str())) {
        let want: Vec<_> = direct.headers.get_all(name).iter().collect();
        let got: Vec<_> = relayed.headers.get_all(name).iter().collect();
        assert_eq!(got, want, "header {name}");
    }
    for name in relayed.headers.keys() {
        assert!(
            direct.headers.contains_key(name),
            "header {name} added on the way: {:?}",
            relayed.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_works_through_a_sidecar_that_holds_no_credential() {
    let Some(claude) = claude_bin() else { return };
    let rig = Rig::plain().await;
    let run = rig.claude(&claude, 0, KEY_ALICE, &["-p", "say hi"]).await;
    assert!(!run.is_error(), "{}\n{}", run.output(), rig.logs());
    assert_eq!(run.code, Some(0));
    assert!(run.result().contains(DEFAULT_REPLY), "{}", run.stdout);

    let calls = rig.upstream_calls();
    assert!(!calls.is_empty());
    for c in &calls {
        assert_eq!(
            c.header("x-api-key"),
            Some(GATEWAY_SECRET),
            "the gateway set its key"
        );
        assert_eq!(
            c.header("authorization"),
            None,
            "the virtual key stops at the gateway"
        );
        assert!(
            c.header("anthropic-beta")
                .is_some_and(|b| b.contains("claude-code")),
            "headers pass both hops"
        );
    }
    // Both hops saw alice: the sidecar checked the key locally, the gateway again.
    let sidecar = rig.sidecars[0].metrics().await.unwrap();
    let gateway = rig.gateway.metrics().await.unwrap();
    let ok = |m: &str, provider: &str| {
        m.lines().any(|l| {
            l.starts_with(r#"tollgate_requests_total{key_id="alice",team="platform""#)
                && l.contains(&format!(r#"provider="{provider}",status="200""#))
        })
    };
    assert!(ok(&sidecar, "gateway"), "{sidecar}");
    assert!(ok(&gateway, "anthropic"), "{gateway}");
    assert!(
        !format!("{}{}", run.output(), rig.sidecars[0].logs()).contains(GATEWAY_SECRET),
        "the provider key reached the sidecar's side"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sidecar_passes_the_gateways_refusal_through_unchanged() {
    let rig = Rig::plain().await;
    let body = simple_body("claude-sonnet-4-5", false);
    let mut gateway_prefix = String::new();
    for (key, status, needle) in [
        (KEY_STALE, 403, "virtual key 'stale' is disabled"),
        (KEY_DROPPED, 401, "invalid virtual key"),
    ] {
        let direct = messages(&rig.gateway.base_url(), key, &body, &[]).await;
        assert_eq!(direct.status, status);
        gateway_prefix = id_prefix(&direct);
        for i in 0..2 {
            let relayed = messages(&rig.sidecar(i), key, &body, &[]).await;
            assert_same_refusal(&direct, &relayed);
            let msg = relayed.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(msg.contains(needle), "{msg}");
        }
    }
    // Defence in depth: a key or a model the sidecar itself refuses never reaches the gateway
    // (its own refusals carry its own request ids).
    let r = messages(&rig.sidecar(0), KEY_UNKNOWN, &body, &[]).await;
    assert_eq!(r.status, 401);
    assert_ne!(id_prefix(&r), gateway_prefix);
    let r = messages(
        &rig.sidecar(1),
        KEY_HAIKU,
        &simple_body("claude-opus-4-8", false),
        &[],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_ne!(id_prefix(&r), gateway_prefix);
    let m = rig.gateway.metrics().await.unwrap();
    assert!(!m.contains(r#"reason="model_not_allowed""#), "{m}");
    assert_eq!(
        metric(
            &m,
            r#"tollgate_denials_total{reason="unknown_key",key_id="",team=""}"#
        ),
        3.0,
        "the dropped key's three requests (one direct, two relayed), none of the unknown key's: {m}"
    );
    assert!(rig.upstream_calls().is_empty());

    // Claude Code shows the engineer the gateway's message.
    let Some(claude) = claude_bin() else { return };
    let run = rig.claude(&claude, 0, KEY_STALE, &["-p", "say hi"]).await;
    assert!(run.is_error(), "{}", run.output());
    assert_ne!(run.code, Some(0));
    assert!(
        run.result().contains("403") && run.result().contains("virtual key 'stale' is disabled"),
        "the engineer sees why: {}",
        run.output()
    );
    assert!(rig.upstream_calls().is_empty(), "nothing went upstream");
}

fn race_cost(usage: &Value) -> u64 {
    let u = Usage {
        input_tokens: usage["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    PriceTable::builtin()
        .get("claude-sonnet-4-5")
        .unwrap()
        .cost(&u)
        .micro_usd_ceil()
}

/// The `retry-after` of a 429 saying requests in flight hold the budget's room: the client
/// waits it out and tries again, as Claude Code does.
fn held_retry(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Option<Duration> {
    let held = status == 429 && String::from_utf8_lossy(body).contains("held by requests in flight");
    held.then(|| {
        let secs: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        Duration::from_secs(secs)
    })
}

/// The documented overshoot bound (README, "Budgets and rate limits"): the sum, over the
/// requests a proxy completed, of `max(0, cost - the estimate it reserved)`, from its logs.
fn overshoot_bound(logs: &str) -> u64 {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "request completed")
        .map(|v| {
            let f = &v["fields"];
            let cost = f["cost_micro_usd"].as_u64().unwrap_or(0);
            cost.saturating_sub(f["estimate_micro_usd"].as_u64().unwrap_or(0))
        })
        .sum()
}

/// One streamed request through `base`, read to its end (retried while the budget's room is
/// held by requests in flight): the status and the body.
async fn stream_once(base: &str) -> (u16, Bytes) {
    loop {
        let (status, headers, body) = stream_attempt(base).await;
        match held_retry(status, &headers, &body) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => return (status, body),
        }
    }
}

async fn stream_attempt(base: &str) -> (u16, http::HeaderMap, Bytes) {
    let resp = open(
        "POST",
        &format!("{base}/anthropic/v1/messages"),
        &[
            ("authorization", &format!("Bearer {KEY_ALICE}")),
            ("anthropic-version", "2023-06-01"),
        ],
        Bytes::from(simple_body("claude-sonnet-4-5", true).to_string()),
    )
    .await
    .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    if status == 200 {
        assert!(
            String::from_utf8_lossy(&body).contains("message_stop"),
            "stream incomplete"
        );
    }
    (status, headers, body)
}

async fn budgets(proxy: &Proxy) -> Vec<Value> {
    let spend = send(
        "GET",
        &format!("{}/admin/spend", proxy.admin_url()),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap()
    .json();
    spend["budgets"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_race_through_two_sidecars_stays_within_one_budget() {
    let mut cfg = FakeConfig::new(GATEWAY_SECRET);
    cfg.drip_delay = Duration::from_millis(5);
    let extras = GatewayExtras {
        team_budget: Some(LIMIT),
        ..Default::default()
    };
    let rig = Rig::start(cfg, extras).await;
    let bases: Arc<Vec<String>> = Arc::new(vec![rig.sidecar(0), rig.sidecar(1)]);

    // 64 clients, 4 streamed requests each, alternating between the sidecars: demand is
    // several times the budget. A 429 for room held by requests in flight is waited out
    // (as Claude Code does); what remains are admissions and 402s.
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let bases = bases.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for j in 0..4 {
                    out.push(stream_once(&bases[(i + j) % 2]).await);
                }
                out
            })
        })
        .collect();
    let mut replies = Vec::new();
    for c in clients {
        replies.extend(c.await.unwrap());
    }
    let ok = replies.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<&Bytes> = replies
        .iter()
        .filter(|(s, _)| *s == 402)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok + refused.len(), replies.len(), "every refusal is a 402");
    assert!(
        ok > 0 && !refused.is_empty(),
        "ok {ok}, refused {}",
        refused.len()
    );
    let v: Value = serde_json::from_slice(refused[0]).unwrap();
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("daily budget 'platform-day' of team 'platform' is exhausted"),
        "the gateway's message: {msg}"
    );

    // The documented bound (README, "Budgets and rate limits"): spend exceeds the limit by at
    // most the sum over requests of max(0, actual cost - estimate). The estimate learns what
    // responses need, so it is the one the gateway reserved for each request (its log), no
    // longer one computed from max_tokens here.
    let calls = rig.upstream_calls();
    assert_eq!(calls.len(), ok, "refused requests never reached the upstream");
    let total: u64 = calls
        .iter()
        .map(|c| c.usage.as_ref().map(race_cost).unwrap_or(0))
        .sum();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let b = budgets(&rig.gateway).await;
        if b.len() == 1 && b[0]["spent_micro_usd"] == total && b[0]["reserved_micro_usd"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "unsettled: {b:?} vs {total}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bound = overshoot_bound(&rig.gateway.logs());
    println!(
        "admitted {ok}, refused {}, spent {total} of {LIMIT} micro-USD, bound {bound}",
        refused.len()
    );
    assert!(
        total <= LIMIT + bound,
        "spent {total} > limit {LIMIT} + bound {bound}"
    );
    assert!(total * 2 > LIMIT, "the budget was used: {total}");
    for s in &rig.sidecars {
        assert_eq!(budgets(s).await, Vec::<Value>::new(), "a sidecar holds no budget");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_not_buffered_at_either_hop() {
    // The upstream sends its first event, then waits until the test releases it.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut cfg = FakeConfig::new(GATEWAY_SECRET);
    cfg.drip_delay = Duration::from_millis(1);
    cfg.hold = Some(gate.clone());
    let rig = Rig::start(cfg, GatewayExtras::default()).await;
    let resp = open(
        "POST",
        &format!("{}/anthropic/v1/messages?beta=true", rig.sidecar(1)),
        &[
            ("authorization", &format!("Bearer {KEY_ALICE}")),
            ("anthropic-version", "2023-06-01"),
            ("x-fake-scenario", Scenario::Slow.name()),
        ],
        Bytes::from(simple_body("claude-sonnet-4-5", true).to_string()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.into_body();
    let first = loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            break data;
        }
    };
    // The upstream has not finished (it cannot, until released), yet the client has the
    // first event: neither hop held the stream back.
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.contains("event: message_start"), "{first}");
    assert!(!first.contains("message_stop"), "{first}");
    gate.add_permits(1);
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("event: message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refusals_reach_the_client_with_their_headers() {
    let rig = Rig::plain().await;
    let body = simple_body("claude-sonnet-4-5", false);
    // One request per minute for `limited` at the gateway: the second within a minute is
    // refused (a third covers a minute boundary falling between the first two).
    let mut limited = None;
    for _ in 0..3 {
        let r = messages(&rig.sidecar(0), KEY_LIMITED, &body, &[]).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let r = limited.expect("never rate limited");
    let v = r.json();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rate limit of 1 requests per minute for key 'limited' reached"),
        "{v}"
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(r.headers["anthropic-ratelimit-requests-limit"], "1");
    assert_eq!(r.headers["anthropic-ratelimit-requests-remaining"], "0");
    let reset: jiff::Timestamp = r.headers["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(reset.as_second() % 60, 0, "resets on the minute: {reset}");
    assert_eq!(r.headers["request-id"].to_str().ok(), v["request_id"].as_str());
    assert!(r.headers.get("x-tollgate-request-id").is_none(), "nothing added");
    let m = rig.gateway.metrics().await.unwrap();
    assert_eq!(
        metric(
            &m,
            r#"tollgate_denials_total{reason="rate_limited_requests",key_id="limited",team="platform"}"#
        ),
        1.0,
        "the sidecar neither retried nor fell back: {m}"
    );

    // The upstream's own 429 passes both hops the same way.
    let before = rig.upstream_calls().len();
    let r = messages(
        &rig.sidecar(1),
        KEY_ALICE,
        &body,
        &[("x-fake-scenario", Scenario::Status429.name())],
    )
    .await;
    assert_eq!(r.status, 429);
    let calls = rig.upstream_calls();
    assert_eq!(calls.len(), before + 1, "one attempt, no retry at either hop");
    let up = calls.last().unwrap();
    assert_eq!(
        r.json()["request_id"],
        up.request_id.as_str(),
        "the upstream's body"
    );
    assert_eq!(r.headers["request-id"], up.request_id.as_str());
    assert_eq!(r.headers["retry-after"], RETRY_AFTER_SECS.to_string().as_str());
    assert_eq!(r.headers["anthropic-ratelimit-requests-limit"], "50");
    assert_eq!(r.headers["anthropic-ratelimit-tokens-remaining"], "0");
}

/// `/proc/PID/environ` and `/proc/PID/cmdline`, as text.
fn process_environment(pid: u32) -> String {
    ["environ", "cmdline"]
        .iter()
        .map(|f| {
            let bytes = std::fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default();
            String::from_utf8_lossy(&bytes).replace('\0', "\n")
        })
        .collect()
}

/// Every file under `dir`, as text.
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_key_never_reaches_a_sidecar_or_its_clients() {
    let rig = Rig::plain().await;
    let mut replies = Vec::new();
    for i in 0..2 {
        let base = rig.sidecar(i);
        for key in [
            KEY_ALICE,
            KEY_HAIKU,
            KEY_STALE,
            KEY_DROPPED,
            KEY_LIMITED,
            KEY_UNKNOWN,
        ] {
            for model in ["claude-sonnet-4-5", "gw-haiku"] {
                replies.push(messages(&base, key, &simple_body(model, true), &[]).await);
                for scenario in [None, Some(Scenario::Status400), Some(Scenario::Status500)] {
                    let extra: Vec<(&str, &str)> = scenario
                        .map(|s| vec![("x-fake-scenario", s.name())])
                        .unwrap_or_default();
                    replies.push(messages(&base, key, &simple_body(model, false), &extra).await);
                }
            }
            let auth = format!("Bearer {key}");
            let h = [
                ("authorization", auth.as_str()),
                ("anthropic-version", "2023-06-01"),
            ];
            let count = simple_body("gw-haiku", false).to_string();
            let url = format!("{base}/v1/messages/count_tokens");
            replies.push(send("POST", &url, &h, Bytes::from(count)).await.unwrap());
            let url = format!("{base}/anthropic/v1/models");
            replies.push(send("GET", &url, &h, Bytes::new()).await.unwrap());
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params":
                {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
            let mcp = [
                ("authorization", auth.as_str()),
                ("accept", "application/json, text/event-stream"),
                ("content-type", "application/json"),
            ];
            let url = format!("{base}/mcp");
            replies.push(
                send("POST", &url, &mcp, Bytes::from(init.to_string()))
                    .await
                    .unwrap(),
            );
        }
    }
    // The key did its job at the gateway: the exchanges happened.
    assert!(
        replies.iter().filter(|r| r.status == 200).count() >= 10,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        rig.upstream_calls()
            .iter()
            .all(|c| c.header("x-api-key") == Some(GATEWAY_SECRET))
    );

    for r in &replies {
        assert!(
            !String::from_utf8_lossy(&r.body).contains(GATEWAY_SECRET),
            "{r:?}"
        );
        for (name, value) in &r.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(GATEWAY_SECRET),
                "header {name}"
            );
        }
    }
    // The check can see a key where it is: the gateway's environment has it.
    assert!(process_environment(rig.gateway.pid()).contains(GATEWAY_SECRET));
    for (i, s) in rig.sidecars.iter().enumerate() {
        let env = process_environment(s.pid());
        assert!(
            env.contains("TOLLGATE") || env.contains("PATH"),
            "environment readable"
        );
        assert!(!env.contains(GATEWAY_SECRET), "sidecar {i}'s environment");
        let logs = s.logs();
        assert!(logs.contains("request completed"), "{logs}");
        assert!(!logs.contains(GATEWAY_SECRET), "sidecar {i}'s logs");
        assert!(
            !logs.contains(KEY_ALICE) && !logs.contains(KEY_UNKNOWN),
            "virtual keys in logs"
        );
    }
    let files = files_under(rig.sidecar_dir.path());
    assert!(!files.is_empty());
    for (path, text) in files {
        assert!(!text.contains(GATEWAY_SECRET), "{}", path.display());
        assert!(!text.contains("credential"), "{}: {text}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_a_provider_unavailable_error() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(&policy, sidecar_policy(&nowhere)).unwrap();
    let sidecar = start_sidecar(&policy);
    let r = messages(
        &sidecar.base_url(),
        KEY_ALICE,
        &simple_body("claude-sonnet-4-5", false),
        &[],
    )
    .await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("provider 'gateway' is unavailable"),
        "{v}"
    );
    let r = send(
        "POST",
        &format!("{}/mcp", sidecar.base_url()),
        &[
            ("authorization", &format!("Bearer {KEY_ALICE}")),
            ("content-type", "application/json"),
        ],
        Bytes::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], -32603);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("MCP gateway 'gateway' is unavailable"),
        "{:?}",
        r.json()
    );
}

/// One JSON-RPC POST to `url` (a `/mcp` endpoint).
async fn rpc(url: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    let mut h = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    h.extend_from_slice(headers);
    send("POST", url, &h, Bytes::from(body.to_string()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_through_a_sidecar_is_served_and_filtered_by_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = McpUpstream::start("alpha", ALPHA_TOKEN, 100, dir.path());
    let extras = GatewayExtras {
        mcp_url: Some(alpha.url.clone()),
        ..Default::default()
    };
    let rig = Rig::start(FakeConfig::new(GATEWAY_SECRET), extras).await;

    // The official SDK client talks to the sidecar; the gateway aggregates and filters.
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "alpha__read_file", "args": {"path": "/srv/a.txt"}},
        {"op": "call", "name": "alpha__write_file", "args": {"path": "/srv/a.txt", "content": "x"}},
    ]);
    let url = format!("{}/mcp", rig.sidecar(0));
    let report = tokio::task::spawn_blocking(move || run_client(&url, KEY_ALICE, &steps, "legacy"))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", rig.logs()));
    let s = &report["steps"];
    assert_eq!(report["server"], "tollgate", "{report}");
    assert_eq!(
        s[0]["tools"],
        json!(["alpha__read_file", "alpha__list_dir"]),
        "the gateway's grant applies: {report}"
    );
    assert_eq!(s[1]["text"], "CONTENT of /srv/a.txt from alpha", "{report}");
    assert_eq!(s[2]["error"]["code"], -32602, "{report}");
    let seen = alpha.seen();
    assert!(
        seen.contains("call read_file") && !seen.contains("call write_file"),
        "{seen}"
    );
    for line in seen.lines().filter(|l| !l.starts_with("call ")) {
        assert_eq!(
            line,
            format!("Bearer {ALPHA_TOKEN}"),
            "only the server's own credential"
        );
    }
    assert!(rig.gateway.logs().contains("mcp tool call"));
    assert!(
        rig.sidecars[0]
            .logs()
            .contains("MCP request relayed to the gateway")
    );

    // By hand, under the /anthropic prefix: the session header comes back from the gateway,
    // the listen stream streams, DELETE ends the session.
    let url = format!("{}/anthropic/mcp", rig.sidecar(1));
    let alice = format!("Bearer {KEY_ALICE}");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params":
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = rpc(&url, &[("authorization", &alice)], init.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sid = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let with_session = [
        ("authorization", alice.as_str()),
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let listen = open(
        "GET",
        &url,
        &[
            with_session[0],
            with_session[1],
            with_session[2],
            ("accept", "text/event-stream"),
        ],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(listen.status(), 200);
    assert_eq!(listen.headers()["content-type"], "text/event-stream");
    assert_eq!(listen.headers()["mcp-session-id"], sid.as_str());
    // The stream never ends; its first frame arriving is the proof it is not buffered.
    let mut stream = listen.into_body();
    let frame = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(
        String::from_utf8_lossy(&frame).starts_with(": keep-alive"),
        "{frame:?}"
    );
    drop(stream);
    let r = send("DELETE", &url, &with_session, Bytes::new()).await.unwrap();
    assert_eq!(r.status, 200);
    let r = rpc(
        &url,
        &with_session,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.status, 404, "the session ended at the gateway");

    // Keys: an unknown one is refused by the sidecar itself, a stale one by the gateway.
    let gateway_denials = |m: &str| m.matches("tollgate_denials_total{").count();
    let before = gateway_denials(&rig.gateway.metrics().await.unwrap());
    let r = rpc(
        &url,
        &[("authorization", &format!("Bearer {KEY_UNKNOWN}"))],
        init.clone(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], -32001);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid virtual key"),
        "{:?}",
        r.json()
    );
    assert!(r.headers.contains_key("www-authenticate"));
    assert_eq!(
        gateway_denials(&rig.gateway.metrics().await.unwrap()),
        before,
        "the gateway never saw it"
    );
    let r = rpc(&url, &[("authorization", &format!("Bearer {KEY_STALE}"))], init).await;
    assert_eq!(r.status, 403);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("virtual key 'stale' is disabled"),
        "{:?}",
        r.json()
    );
    assert!(rig.gateway.logs().contains("MCP request denied"));
}
