//! End to end with the real client: Claude Code from npm (pinned in `e2e/package.json`)
//! talks to the real `tollgate-proxy` binary, which forwards to the fake Anthropic upstream.
//! Run `make test` (or `npm ci --prefix e2e`) first so `e2e/node_modules/.bin/claude` exists.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tollgate_tests::claude::{ClaudeRun, claude_bin, run_claude};
use tollgate_tests::fake_anthropic::{DEFAULT_REPLY, FakeAnthropic, FakeConfig};
use tollgate_tests::harness::{Proxy, send};
use tollgate_tests::policy::{
    KEY_ALICE, KEY_HAIKU, PROVIDER_KEY, PROVIDER_KEY_ENV, standard_policy, write_atomically,
};

struct Rig {
    fake: FakeAnthropic,
    proxy: Proxy,
    policy: PathBuf,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    rig_with("").await
}

/// A rig whose policy has `extra` top-level sections appended.
async fn rig_with(extra: &str) -> Rig {
    rig_with_config(FakeConfig::new(PROVIDER_KEY), extra).await
}

async fn rig_with_config(cfg: FakeConfig, extra: &str) -> Rig {
    let fake = FakeAnthropic::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!("{}{extra}", standard_policy(&fake.base_url(), true)),
    )
    .unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"));
    let proxy = Proxy::start(&bin, &policy, &[(PROVIDER_KEY_ENV, PROVIDER_KEY)]).unwrap();
    Rig {
        fake,
        proxy,
        policy,
        _dir: dir,
    }
}

/// Runs the blocking Claude Code process off the runtime that serves the fake upstream.
async fn claude(claude: &Path, rig: &Rig, key: &str, args: &[&str]) -> ClaudeRun {
    claude_with_env(claude, rig, key, args, &[]).await
}

/// [`claude`] with extra environment variables.
async fn claude_with_env(
    claude: &Path,
    rig: &Rig,
    key: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> ClaudeRun {
    let (c, key) = (claude.to_owned(), key.to_owned());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let base = format!("{}/anthropic", rig.proxy.base_url());
    tokio::task::block_in_place(|| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = vec![
            ("ANTHROPIC_BASE_URL", base.as_str()),
            ("ANTHROPIC_AUTH_TOKEN", key.as_str()),
        ];
        env.extend_from_slice(extra);
        run_claude(&c, &a, &env, None)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_prints_the_reply_through_the_gateway() {
    let Some(bin) = claude_bin() else { return };
    let rig = rig().await;
    let run = claude(&bin, &rig, KEY_ALICE, &["-p", "say hi"]).await;
    assert!(
        !run.is_error(),
        "stdout {} stderr {}\nproxy logs:\n{}",
        run.stdout,
        run.stderr,
        rig.proxy.logs()
    );
    assert_eq!(run.code, Some(0));
    assert!(run.result().contains(DEFAULT_REPLY), "{}", run.stdout);

    let calls: Vec<_> = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert!(!calls.is_empty());
    for c in &calls {
        assert_eq!(c.header("x-api-key"), Some(PROVIDER_KEY));
        assert_eq!(c.header("authorization"), None);
        assert!(
            c.header("anthropic-beta")
                .is_some_and(|b| b.contains("claude-code")),
            "beta list forwarded"
        );
    }
    let logs = rig.proxy.logs();
    assert!(logs.contains("\"key_id\":\"alice\""), "{logs}");
    // Claude Code's default model must be priced: an unpriced model would escape cost control.
    let m = rig.proxy.metrics().await.unwrap();
    let cost: f64 = m
        .lines()
        .filter(|l| l.starts_with("tollgate_cost_micro_usd_total{key_id=\"alice\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        cost > 0.0,
        "no cost counted for Claude Code's default model:\n{m}"
    );
    assert!(!m.contains("tollgate_unpriced_responses_total{"), "{m}");
    assert!(
        !logs.contains(KEY_ALICE) && !logs.contains(PROVIDER_KEY),
        "secrets in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_tool_use_loop_completes() {
    let Some(bin) = claude_bin() else { return };
    let rig = rig().await;
    let run = claude(
        &bin,
        &rig,
        KEY_ALICE,
        &["-p", "run echo TOOL_OK", "--allowedTools", "Bash(echo:*)"],
    )
    .await;
    assert!(!run.is_error(), "stdout {} stderr {}", run.stdout, run.stderr);
    assert!(run.result().contains("Tool said: TOOL_OK"), "{}", run.stdout);
    let calls = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .count();
    assert!(calls >= 2, "a tool loop is at least two model calls, saw {calls}");
    let m = rig.proxy.metrics().await.unwrap();
    assert!(
        m.contains(r#"tollgate_requests_total{key_id="alice",team="platform""#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_shows_a_denied_model_to_the_engineer() {
    let Some(bin) = claude_bin() else { return };
    let rig = rig().await;
    let run = claude(
        &bin,
        &rig,
        KEY_HAIKU,
        &["-p", "say hi", "--model", "claude-opus-4-8"],
    )
    .await;
    assert!(run.is_error(), "{}", run.stdout);
    assert_ne!(run.code, Some(0));
    assert!(
        run.result().contains("403") && run.result().contains("model 'claude-opus-4-8' is not allowed"),
        "the engineer sees why: {}",
        run.stdout
    );
    assert!(
        rig.fake.requests().iter().all(|r| r.path != "/v1/messages"),
        "nothing went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_is_refused_within_a_second_of_revocation() {
    let Some(bin) = claude_bin() else { return };
    let rig = rig().await;
    let run = claude(&bin, &rig, KEY_ALICE, &["-p", "say hi"]).await;
    assert!(!run.is_error(), "{}", run.stdout);

    write_atomically(&rig.policy, &standard_policy(&rig.fake.base_url(), false)).unwrap();
    let revoked = Instant::now();
    let url = format!("{}/anthropic/v1/models", rig.proxy.base_url());
    let auth = format!("Bearer {KEY_ALICE}");
    loop {
        let r = send("GET", &url, &[("authorization", &auth)], bytes::Bytes::new())
            .await
            .unwrap();
        if r.status == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let upstream_before = rig.fake.requests().len();
    let run = claude(&bin, &rig, KEY_ALICE, &["-p", "say hi again"]).await;
    assert!(run.is_error(), "{}", run.stdout);
    assert!(
        run.result().contains("401") && run.result().contains("invalid virtual key"),
        "{}",
        run.stdout
    );
    assert_eq!(
        rig.fake.requests().len(),
        upstream_before,
        "the revoked key reached nothing upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_shows_the_engineer_which_budget_ran_out_mid_session() {
    let Some(bin) = claude_bin() else { return };
    // Room for the first model call of the tool loop (its estimate is about $0.49 for a
    // 49 KB Claude Code body at Opus prices with the 16384-token output cap: nothing is
    // learned from fewer than 4 responses), not for the second once the first (about $0.06)
    // is settled.
    let rig = rig_with(
        "budgets:\n  - {id: alice-daily, scope: {kind: key, name: alice}, limit_micro_usd: 530000, period: daily}\n",
    )
    .await;
    let run = claude(
        &bin,
        &rig,
        KEY_ALICE,
        &["-p", "run echo TOOL_OK", "--allowedTools", "Bash(echo:*)"],
    )
    .await;
    let calls: Vec<_> = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    let spend = send(
        "GET",
        &format!("{}/admin/spend", rig.proxy.admin_url()),
        &[],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    let max_tokens: Vec<_> = calls
        .iter()
        .map(|c| (c.body.len(), c.body_json().unwrap()["max_tokens"].clone()))
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "the first call went upstream, the second was refused: {}\nspend {}\nbodies {max_tokens:?}",
        run.stdout,
        String::from_utf8_lossy(&spend.body)
    );
    assert!(run.is_error(), "{}", run.stdout);
    let result = run.result();
    assert!(result.contains("402"), "{}", run.stdout);
    assert!(
        result.contains("daily budget 'alice-daily' of key 'alice' is exhausted"),
        "{}",
        run.stdout
    );
    assert!(result.contains("resets at"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_waits_out_budget_room_held_by_a_request_in_flight() {
    let Some(bin) = claude_bin() else { return };
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let mut cfg = FakeConfig::new(PROVIDER_KEY);
    cfg.hold = Some(gate.clone());
    cfg.drip_delay = Duration::from_millis(1);
    // $0.70: room for Claude Code's request (about $0.49 reserved) or for the held stream
    // (about $0.41), not for both at once.
    let rig = rig_with_config(
        cfg,
        "budgets:\n  - {id: alice-daily, scope: {kind: key, name: alice}, limit_micro_usd: 700000, period: daily}\n",
    )
    .await;
    let held = tollgate_tests::harness::open(
        "POST",
        &format!("{}/v1/messages", rig.proxy.base_url()),
        &[
            ("x-api-key", KEY_ALICE),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
            ("x-fake-scenario", "slow"),
        ],
        bytes::Bytes::from(
            serde_json::json!({"model": "claude-opus-4-8", "max_tokens": 16384, "stream": true,
                "messages": [{"role": "user", "content": "take your time"}]})
            .to_string(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(held.status(), 200);
    // The held stream ends two seconds into Claude Code's run, freeing the room.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        gate.add_permits(1);
        http_body_util::BodyExt::collect(held.into_body()).await.is_ok()
    });
    let started = Instant::now();
    // The harness turns Claude Code's retries off; here they are the point.
    let retries = [("CLAUDE_CODE_MAX_RETRIES", "5")];
    let run = claude_with_env(&bin, &rig, KEY_ALICE, &["-p", "say hi"], &retries).await;
    assert!(release.await.unwrap(), "the held stream ended cleanly");
    assert!(
        !run.is_error(),
        "stdout {} stderr {}\nproxy logs:\n{}",
        run.stdout,
        run.stderr,
        rig.proxy.logs()
    );
    assert!(run.result().contains(DEFAULT_REPLY), "{}", run.stdout);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "served while the room was held"
    );
    let logs = rig.proxy.logs();
    assert!(
        logs.contains("\"reason\":\"budget_held\"") && !logs.contains("\"reason\":\"budget_exhausted\""),
        "the refusal was a 429 to wait out, never a 402:\n{logs}"
    );
}
