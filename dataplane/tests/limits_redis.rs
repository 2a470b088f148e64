//! Budgets across replicas: several real `tollgate-proxy` processes share one real
//! `redis-server`, and the shared ledger holds under concurrent streaming load.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_dataplane::pricing::PriceTable;
use tollgate_dataplane::usage::Usage;
use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig};
use tollgate_tests::harness::{Proxy, open, send};
use tollgate_tests::policy::{KEY_ALICE, PROVIDER_KEY, PROVIDER_KEY_ENV, standard_policy};
use tollgate_tests::redis_server::RedisServer;

const LIMIT: u64 = 5_000;
const MAX_TOKENS: u64 = 10;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

fn body() -> Bytes {
    Bytes::from(
        json!({"model": "claude-sonnet-4-5", "max_tokens": MAX_TOKENS, "stream": true,
            "messages": [{"role": "user", "content": "say hi"}]})
        .to_string(),
    )
}

fn policy(upstream: &str, mode: &str) -> String {
    format!(
        "{}budgets:\n  - {{id: platform-day, scope: {{kind: team, name: platform}}, limit_micro_usd: {LIMIT}, period: daily}}\nlimits: {{on_ledger_unavailable: {mode}}}\n",
        standard_policy(upstream, true)
    )
}

fn cost(usage: &Value) -> u64 {
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

/// One streamed request through `base`, read to its end; a 429 for budget room held by
/// requests in flight is waited out (its `retry-after`) and retried, as Claude Code does.
async fn stream_once(base: &str) -> u16 {
    loop {
        match stream_attempt(base).await {
            (429, Some(wait)) => tokio::time::sleep(wait).await,
            (status, _) => return status,
        }
    }
}

async fn stream_attempt(base: &str) -> (u16, Option<Duration>) {
    let resp = open(
        "POST",
        &format!("{base}/anthropic/v1/messages"),
        &[
            ("authorization", &format!("Bearer {KEY_ALICE}")),
            ("anthropic-version", "2023-06-01"),
        ],
        body(),
    )
    .await
    .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    if status == 200 {
        assert!(
            String::from_utf8_lossy(&bytes).contains("message_stop"),
            "stream incomplete"
        );
    }
    let held = String::from_utf8_lossy(&bytes).contains("held by requests in flight");
    (status, retry_after.filter(|_| held).map(Duration::from_secs))
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

async fn spent(proxy: &Proxy) -> Value {
    let s = send(
        "GET",
        &format!("{}/admin/spend", proxy.admin_url()),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap()
    .json();
    s["budgets"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sharing_redis_hold_a_team_budget_under_64_streaming_clients() {
    let Some(redis) = RedisServer::start_or_skip("the shared-budget test") else {
        return;
    };
    let mut cfg = FakeConfig::new(PROVIDER_KEY);
    cfg.drip_delay = Duration::from_millis(5);
    cfg.record = true;
    let fake = FakeAnthropic::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, policy(&fake.base_url(), "fail_closed")).unwrap();
    let url = redis.url();
    let proxies: Vec<Proxy> = (0..3)
        .map(|_| {
            Proxy::start_with_args(
                &bin(),
                &file,
                &[(PROVIDER_KEY_ENV, PROVIDER_KEY)],
                &["--ledger", &url],
            )
            .unwrap()
        })
        .collect();
    let bases: Arc<Vec<String>> = Arc::new(proxies.iter().map(Proxy::base_url).collect());

    // 64 clients, 4 streamed requests each, spread over the replicas: demand is ~8x the budget.
    // A 429 for room held by requests in flight is waited out; what remains are admissions
    // and 402s.
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let bases = bases.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for j in 0..4 {
                    statuses.push(stream_once(&bases[(i + j) % bases.len()]).await);
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in clients {
        statuses.extend(c.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!(
        ok + refused,
        statuses.len(),
        "every refusal is a 402: {statuses:?}"
    );
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");

    // The documented bound: overshoot <= sum over requests of max(0, actual - estimate), with
    // the estimate each replica reserved (it learns what responses need: from its log).
    let calls = fake.requests();
    let total: u64 = calls
        .iter()
        .filter(|c| c.path == "/v1/messages")
        .map(|c| c.usage.as_ref().map(cost).unwrap_or(0))
        .sum();
    let bound: u64 = proxies.iter().map(|p| overshoot_bound(&p.logs())).sum();
    assert_eq!(calls.len(), ok, "refused requests never reached the upstream");

    // Every replica reads the same settled spend from Redis, equal to what the upstream billed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let views: Vec<Value> = futures_join(&proxies).await;
        if views
            .iter()
            .all(|v| v["spent_micro_usd"] == total && v["reserved_micro_usd"] == 0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas disagree or unsettled: {views:?} vs {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("admitted {ok}, refused {refused}, spent {total} of {LIMIT} micro-USD, bound {bound}");
    assert!(
        total <= LIMIT + bound,
        "spent {total} > limit {LIMIT} + bound {bound}"
    );
    assert!(total * 2 > LIMIT, "the budget was used: {total}");
}

async fn futures_join(proxies: &[Proxy]) -> Vec<Value> {
    let mut out = Vec::new();
    for p in proxies {
        out.push(spent(p).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_closed_or_open_as_the_policy_says_and_recovers() {
    let Some(mut redis) = RedisServer::start_or_skip("the ledger failure-mode test") else {
        return;
    };
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed.yaml");
    let open_ = dir.path().join("open.yaml");
    std::fs::write(&closed, policy(&fake.base_url(), "fail_closed")).unwrap();
    std::fs::write(&open_, policy(&fake.base_url(), "fail_open_with_local_limits")).unwrap();
    let url = redis.url();
    let env = [(PROVIDER_KEY_ENV, PROVIDER_KEY)];
    let p_closed = Proxy::start_with_args(&bin(), &closed, &env, &["--ledger", &url]).unwrap();
    let p_open = Proxy::start_with_args(&bin(), &open_, &env, &["--ledger", &url]).unwrap();
    assert_eq!(stream_once(&p_closed.base_url()).await, 200);

    redis.stop();
    let r = send(
        "POST",
        &format!("{}/v1/messages", p_closed.base_url()),
        &[("x-api-key", KEY_ALICE), ("anthropic-version", "2023-06-01")],
        body(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.contains("ledger is unavailable") && msg.contains("fails closed"),
        "{msg}"
    );
    assert_eq!(
        stream_once(&p_open.base_url()).await,
        200,
        "fail-open admits on local limits"
    );
    let m = p_closed.metrics().await.unwrap();
    assert!(m.contains(r#"tollgate_ledger_errors_total{op="admit"}"#), "{m}");

    redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_once(&p_closed.base_url()).await != 200 {
        assert!(Instant::now() < deadline, "no automatic recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A settlement that cannot reach Redis (it went down while the response streamed) is not
/// lost: after the retries it waits in the outbox and is applied once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_redis_missed_is_replayed_from_the_outbox_when_it_is_back() {
    let Some(mut redis) = RedisServer::start_or_skip("the settlement outbox test") else {
        return;
    };
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let mut cfg = FakeConfig::new(PROVIDER_KEY);
    cfg.hold = Some(hold.clone());
    let fake = FakeAnthropic::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy(&fake.base_url(), "fail_closed")).unwrap();
    let outbox = dir.path().join("ledger.outbox");
    let p = Proxy::start_with_args(
        &bin(),
        &file,
        &[(PROVIDER_KEY_ENV, PROVIDER_KEY)],
        &[
            "--ledger",
            &redis.url(),
            "--ledger-outbox",
            outbox.to_str().unwrap(),
        ],
    )
    .unwrap();
    let resp = open(
        "POST",
        &format!("{}/v1/messages", p.base_url()),
        &[
            ("x-api-key", KEY_ALICE),
            ("anthropic-version", "2023-06-01"),
            ("x-fake-scenario", "slow"),
        ],
        body(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    // Admitted; Redis goes away before the response ends, so the settlement cannot land.
    redis.stop();
    hold.add_permits(1);
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&raw);
    let usage_line = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["type"] == "message_delta")
        .expect("message_delta");
    let start = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["type"] == "message_start")
        .unwrap();
    let want = cost(&json!({
        "input_tokens": start["message"]["usage"]["input_tokens"],
        "output_tokens": usage_line["usage"]["output_tokens"],
    }));
    assert!(want > 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.logs().contains("settlement kept in the outbox") {
        assert!(Instant::now() < deadline, "never queued:\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        std::fs::metadata(&outbox).map(|m| m.len()).unwrap_or(0) > 0,
        "persisted while Redis is down"
    );

    // Redis is back (empty: it kept nothing): the outbox replays the settlement.
    redis.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = spent(&p).await;
        if s["spent_micro_usd"].as_u64() == Some(want) {
            break;
        }
        assert!(Instant::now() < deadline, "never replayed: {s}\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = p.metrics().await.unwrap();
    assert!(m.contains("tollgate_ledger_outbox_replayed_total 1"), "{m}");
    assert!(m.contains("tollgate_ledger_outbox_pending 0"), "{m}");
    // Replayed once: a second look a little later sees the same spend.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(spent(&p).await["spent_micro_usd"].as_u64(), Some(want));
}
