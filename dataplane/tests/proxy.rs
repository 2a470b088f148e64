//! Integration tests: the real `tollgate-proxy` binary between a test client and the faithful
//! fake Anthropic upstream, all over loopback HTTP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_dataplane::pricing::PriceTable;
use tollgate_dataplane::usage::Usage;
use tollgate_tests::fake_anthropic::{DEFAULT_REPLY, FakeAnthropic, FakeConfig, PROMPT_TOO_LONG, Scenario};
use tollgate_tests::harness::{Proxy, Reply, open, send};
use tollgate_tests::policy::{
    KEY_ALICE, KEY_HAIKU, KEY_OFF, KEY_OLD, PROVIDER_KEY, PROVIDER_KEY_ENV, standard_policy, write_atomically,
};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

fn claude_code_body() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/messages-request-claude-code.json"
    ))
    .unwrap()
}

struct Rig {
    fake: FakeAnthropic,
    proxy: Proxy,
    policy: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        Self::start_with_args(&[]).await
    }

    async fn start_with_args(args: &[&str]) -> Rig {
        let mut cfg = FakeConfig::new(PROVIDER_KEY);
        cfg.drip_delay = Duration::from_millis(150);
        let fake = FakeAnthropic::start(cfg).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, standard_policy(&fake.base_url(), true)).unwrap();
        let proxy =
            Proxy::start_with_args(&bin(), &policy, &[(PROVIDER_KEY_ENV, PROVIDER_KEY)], args).unwrap();
        Rig {
            fake,
            proxy,
            policy,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.base_url())
    }

    async fn messages(&self, key: &str, body: Value, extra: &[(&str, &str)]) -> Reply {
        let auth = format!("Bearer {key}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        send(
            "POST",
            &self.url("/anthropic/v1/messages?beta=true"),
            &headers,
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap()
    }
}

fn simple_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": "say hi"}],
    })
}

fn assert_anthropic_error(r: &Reply, status: u16, error_type: &str, needle: &str) {
    assert_eq!(r.status, status, "body: {}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], error_type, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert!(
        v["request_id"].as_str().is_some_and(|s| s.starts_with("req_")),
        "{v}"
    );
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

fn usage_of(v: &Value) -> Usage {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_write_5m_tokens: v["cache_creation"]["ephemeral_5m_input_tokens"]
            .as_u64()
            .unwrap_or(0),
        cache_write_1h_tokens: v["cache_creation"]["ephemeral_1h_input_tokens"]
            .as_u64()
            .unwrap_or(0),
        cache_read_tokens: n("cache_read_input_tokens"),
        ..Default::default()
    }
}

#[tokio::test]
async fn json_request_is_authenticated_renamed_and_forwarded_verbatim() {
    let rig = Rig::start().await;
    let original = claude_code_body();
    let mut v: Value = serde_json::from_slice(&original).unwrap();
    v["stream"] = json!(false);
    let text = serde_json::to_string(&v)
        .unwrap()
        .replace(r#""model":"claude-opus-4-8""#, r#""model":"gw-opus""#);
    let beta = "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14";
    let r = send(
        "POST",
        &rig.url("/anthropic/v1/messages?beta=true"),
        &[
            ("authorization", &format!("Bearer {KEY_ALICE}")),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", beta),
            ("x-claude-code-session-id", "sess-1"),
        ],
        Bytes::from(text.clone()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["content"][0]["text"], DEFAULT_REPLY);

    let seen = rig.fake.requests();
    let up = seen.last().unwrap();
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.query.as_deref(), Some("beta=true"));
    assert_eq!(up.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(
        up.header("authorization"),
        None,
        "the virtual key must not go upstream"
    );
    assert_eq!(up.header("anthropic-beta"), Some(beta));
    assert_eq!(up.header("x-claude-code-session-id"), Some("sess-1"));
    // Only the model changed: same bytes otherwise (system array, unknown fields, order).
    let expected = text.replace(r#""model":"gw-opus""#, r#""model":"claude-opus-4-8""#);
    assert_eq!(std::str::from_utf8(&up.body).unwrap(), expected);

    let usage = usage_of(up.usage.as_ref().unwrap());
    let cost = PriceTable::builtin()
        .get("claude-opus-4-8")
        .unwrap()
        .cost(&usage)
        .micro_usd_ceil();
    assert!(cost > 0);
    let m = rig.proxy.metrics().await.unwrap();
    let labels = r#"key_id="alice",team="platform",model="gw-opus",provider="fake""#;
    assert_eq!(
        metric(&m, &format!("tollgate_cost_micro_usd_total{{{labels}}}")),
        cost as f64,
        "{m}"
    );
    assert_eq!(
        metric(&m, &format!("tollgate_tokens_total{{{labels},class=\"input\"}}")),
        usage.input_tokens as f64
    );
    assert_eq!(
        metric(&m, &format!("tollgate_requests_total{{{labels},status=\"200\"}}")),
        1.0
    );
}

#[tokio::test]
async fn streaming_passes_every_event_and_counts_usage() {
    let rig = Rig::start().await;
    for scenario in [None, Some(Scenario::Cache)] {
        let extra: Vec<(&str, &str)> = scenario
            .map(|s| vec![("x-fake-scenario", s.name())])
            .unwrap_or_default();
        let before = rig.proxy.metrics().await.unwrap();
        let r = rig
            .messages(KEY_ALICE, simple_body("claude-sonnet-4-5", true), &extra)
            .await;
        assert_eq!(r.status, 200);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(events.first(), Some(&"message_start"), "{text}");
        assert_eq!(events.last(), Some(&"message_stop"));
        assert!(events.contains(&"ping"), "pings are relayed: {events:?}");

        let up = rig.fake.requests().pop().unwrap();
        let usage = usage_of(up.usage.as_ref().unwrap());
        let after = rig.proxy.metrics().await.unwrap();
        let labels = r#"key_id="alice",team="platform",model="claude-sonnet-4-5",provider="fake""#;
        for (class, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_write_5m", usage.cache_write_5m_tokens),
            ("cache_write_1h", usage.cache_write_1h_tokens),
            ("cache_read", usage.cache_read_tokens),
        ] {
            let series = format!("tollgate_tokens_total{{{labels},class=\"{class}\"}}");
            assert_eq!(
                metric(&after, &series) - metric(&before, &series),
                n as f64,
                "{class} in\n{after}"
            );
        }
        let expected = PriceTable::builtin()
            .get("claude-sonnet-4-5")
            .unwrap()
            .cost(&usage)
            .micro_usd_ceil();
        let series = format!("tollgate_cost_micro_usd_total{{{labels}}}");
        assert_eq!(
            metric(&after, &series) - metric(&before, &series),
            expected as f64
        );
    }
}

#[tokio::test]
async fn stream_is_not_buffered() {
    let rig = Rig::start().await;
    let body = simple_body("claude-sonnet-4-5", true).to_string();
    let resp = open(
        "POST",
        &rig.url("/v1/messages"),
        &[
            ("x-api-key", KEY_ALICE),
            ("anthropic-version", "2023-06-01"),
            ("x-fake-scenario", Scenario::Slow.name()),
        ],
        Bytes::from(body),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            break data;
        }
    };
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains("message_start"), "{first}");
    assert!(
        !first.contains("message_stop"),
        "the proxy held the stream back: first chunk had the end"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("message_stop"));
}

#[tokio::test]
async fn mid_stream_error_and_cut_streams_reach_the_client_and_count_as_incomplete() {
    let rig = Rig::start().await;
    let r = rig
        .messages(
            KEY_ALICE,
            simple_body("claude-sonnet-4-5", true),
            &[("x-fake-scenario", "error-midstream")],
        )
        .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("event: error") && text.contains("overloaded_error"),
        "{text}"
    );

    let resp = open(
        "POST",
        &rig.url("/v1/messages"),
        &[
            ("x-api-key", KEY_ALICE),
            ("anthropic-version", "2023-06-01"),
            ("x-fake-scenario", "cut"),
        ],
        Bytes::from(simple_body("claude-sonnet-4-5", true).to_string()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.into_body().collect().await.is_err(),
        "a cut upstream stream must surface as a cut"
    );

    // Accounting happens when the body ends; give the proxy a moment to finish.
    let series = r#"tollgate_responses_incomplete_total{key_id="alice",team="platform",model="claude-sonnet-4-5",provider="fake"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = rig.proxy.metrics().await.unwrap();
        if metric(&m, series) == 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "expected 2 incomplete responses:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let rig = Rig::start().await;
    for (scenario, status) in [
        ("status-400", 400),
        ("status-429", 429),
        ("status-500", 500),
        ("status-529", 529),
    ] {
        let r = rig
            .messages(
                KEY_ALICE,
                simple_body("claude-sonnet-4-5", false),
                &[("x-fake-scenario", scenario)],
            )
            .await;
        assert_eq!(r.status, status, "{scenario}");
        let up = rig.fake.requests().pop().unwrap();
        let v = r.json();
        assert_eq!(
            v["request_id"],
            up.request_id.as_str(),
            "the upstream body, not ours"
        );
        if scenario == "status-400" {
            assert_eq!(v["error"]["message"], PROMPT_TOO_LONG);
        }
        if scenario == "status-429" {
            assert_eq!(r.headers["retry-after"], "7");
        }
    }
}

#[tokio::test]
async fn gateway_refusals_use_anthropic_errors_with_chosen_statuses() {
    let rig = Rig::start_with_args(&["--max-body-bytes", "4096"]).await;
    let r = send("POST", &rig.url("/anthropic/v1/messages"), &[], Bytes::from("{}"))
        .await
        .unwrap();
    assert_anthropic_error(&r, 401, "authentication_error", "no virtual key");
    let r = rig
        .messages("tg_wrong_key", simple_body("claude-sonnet-4-5", false), &[])
        .await;
    assert_anthropic_error(&r, 401, "authentication_error", "invalid virtual key");
    let r = rig
        .messages(KEY_OFF, simple_body("claude-sonnet-4-5", false), &[])
        .await;
    assert_anthropic_error(&r, 403, "permission_error", "'off' is disabled");
    let r = rig
        .messages(KEY_OLD, simple_body("claude-sonnet-4-5", false), &[])
        .await;
    assert_anthropic_error(&r, 403, "permission_error", "'old' expired");
    let r = rig
        .messages(KEY_HAIKU, simple_body("claude-opus-4-8", false), &[])
        .await;
    assert_anthropic_error(
        &r,
        403,
        "permission_error",
        "model 'claude-opus-4-8' is not allowed",
    );
    let r = rig.messages(KEY_ALICE, simple_body("gpt-5", false), &[]).await;
    assert_anthropic_error(&r, 404, "not_found_error", "'gpt-5' is not served");
    let r = send(
        "POST",
        &rig.url("/v1/messages"),
        &[("x-api-key", KEY_ALICE), ("anthropic-version", "2023-06-01")],
        Bytes::from_static(b"{not json"),
    )
    .await
    .unwrap();
    assert_anthropic_error(&r, 400, "invalid_request_error", "not a valid JSON object");
    let r = send(
        "POST",
        &rig.url("/v1/messages"),
        &[("x-api-key", KEY_ALICE)],
        Bytes::from_static(b"{}"),
    )
    .await
    .unwrap();
    assert_anthropic_error(
        &r,
        400,
        "invalid_request_error",
        "anthropic-version: header is required",
    );
    let mut big = simple_body("claude-sonnet-4-5", false);
    big["messages"][0]["content"] = json!("x".repeat(8192));
    let r = rig.messages(KEY_ALICE, big, &[]).await;
    assert_anthropic_error(&r, 413, "request_too_large", "exceeds 4096 bytes");
    let r = send(
        "GET",
        &rig.url("/v2/whatever"),
        &[("x-api-key", KEY_ALICE)],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_anthropic_error(&r, 404, "not_found_error", "no route");
    assert!(
        rig.fake.requests().is_empty(),
        "no refused request reached the upstream"
    );

    let m = rig.proxy.metrics().await.unwrap();
    assert_eq!(
        metric(
            &m,
            r#"tollgate_denials_total{reason="model_not_allowed",key_id="haiku-only",team="interns"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_denials_total{reason="unknown_key",key_id="",team=""}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn fallback_target_and_unreachable_provider() {
    let rig = Rig::start().await;
    let r = rig
        .messages(KEY_ALICE, simple_body("gw-fallback", false), &[])
        .await;
    assert_eq!(
        r.status, 200,
        "second target serves when the first is unreachable"
    );
    let up = rig.fake.requests().pop().unwrap();
    assert_eq!(up.body_json().unwrap()["model"], "claude-sonnet-4-5");
}

#[tokio::test]
async fn models_count_tokens_and_probe() {
    let rig = Rig::start().await;
    let r = send("HEAD", &rig.url("/"), &[], Bytes::new()).await.unwrap();
    assert_eq!(r.status, 200);
    let r = send(
        "GET",
        &rig.url("/anthropic/v1/models?limit=1000"),
        &[("x-api-key", KEY_HAIKU)],
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
    assert!(ids.contains(&"gw-haiku".to_owned()), "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| id == "gw-haiku" || id.starts_with("claude-haiku-")),
        "{ids:?}"
    );
    let r = send(
        "GET",
        &rig.url("/v1/models/gw-opus"),
        &[("x-api-key", KEY_HAIKU)],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);

    let body = simple_body("gw-haiku", false).to_string();
    let r = send(
        "POST",
        &rig.url("/anthropic/v1/messages/count_tokens"),
        &[("x-api-key", KEY_HAIKU), ("anthropic-version", "2023-06-01")],
        Bytes::from(body),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["input_tokens"].as_u64().is_some());
    let up = rig.fake.requests().pop().unwrap();
    assert_eq!(up.path, "/v1/messages/count_tokens");
    assert_eq!(up.body_json().unwrap()["model"], "claude-haiku-4-5");
}

async fn wait_for_status(rig: &Rig, key: &str, want: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = rig
            .messages(key, simple_body("claude-sonnet-4-5", false), &[])
            .await;
        if r.status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "status {} after {within:?}, wanted {want}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn hot_reload_revokes_within_a_second_and_keeps_last_good_policy() {
    let rig = Rig::start().await;
    assert_eq!(
        rig.messages(KEY_ALICE, simple_body("claude-sonnet-4-5", false), &[])
            .await
            .status,
        200
    );

    // An invalid document is rejected: the last good policy keeps serving.
    write_atomically(&rig.policy, "version: 1\nkeys: [{id: x, sha256: nothex}]\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = rig.proxy.metrics().await.unwrap();
        if metric(&m, "tollgate_policy_last_reload_success") == 0.0 && m.contains("result=\"rejected\"") {
            break;
        }
        assert!(Instant::now() < deadline, "rejection not reported:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        rig.messages(KEY_ALICE, simple_body("claude-sonnet-4-5", false), &[])
            .await
            .status,
        200
    );
    let ready = send(
        "GET",
        &format!("{}/readyz", rig.proxy.admin_url()),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(ready.status, 200);
    let v = ready.json();
    assert_eq!(v["policy"]["last_reload_ok"], false, "{v}");
    assert!(
        v["policy"]["last_error"]
            .as_str()
            .unwrap()
            .contains("keys[0].sha256"),
        "{v}"
    );
    assert_eq!(
        rig.proxy.logs().matches("policy rejected").count(),
        1,
        "logged once"
    );

    // Revocation: the key disappears from the policy and is refused within 1 s.
    write_atomically(&rig.policy, &standard_policy(&rig.fake.base_url(), false)).unwrap();
    let took = wait_for_status(&rig, KEY_ALICE, 401, Duration::from_secs(1)).await;
    println!("revocation took effect after {took:?}");
    let v = send(
        "GET",
        &format!("{}/readyz", rig.proxy.admin_url()),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap()
    .json();
    assert_eq!(v["policy"]["last_reload_ok"], true, "{v}");
}

#[tokio::test]
async fn no_secret_ever_appears_in_logs() {
    let rig = Rig::start().await;
    for key in [KEY_ALICE, KEY_HAIKU, KEY_OFF, KEY_OLD, "tg_unknown_SECRET"] {
        for model in ["claude-sonnet-4-5", "claude-opus-4-8", "gw-fallback"] {
            let _ = rig.messages(key, simple_body(model, true), &[]).await;
            let _ = rig
                .messages(
                    key,
                    simple_body(model, false),
                    &[("x-fake-scenario", "status-500")],
                )
                .await;
        }
    }
    // A broken policy and a missing credential are logged too.
    write_atomically(&rig.policy, "version: 1\nkeys: [{id: x, sha256: nothex}]\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let logs = rig.proxy.logs();
    assert!(
        logs.contains("request completed") && logs.contains("request denied"),
        "{logs}"
    );
    for secret in [
        PROVIDER_KEY,
        KEY_ALICE,
        KEY_HAIKU,
        KEY_OFF,
        KEY_OLD,
        "tg_unknown_SECRET",
        "SECRET",
    ] {
        assert!(!logs.contains(secret), "secret {secret:?} leaked into the logs");
    }
    for line in logs.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("non-JSON log line {line:?}: {e}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn check_command_validates_offline() {
    let ok = std::process::Command::new(bin())
        .args([
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.yaml"),
        ])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nteams: [{id: a}]\nkeys: [{id: k, sha256: abc, team: b}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keys[0].sha256") && err.contains("keys[0].team"),
        "{err}"
    );
}

#[test]
fn shutdown_on_sigterm_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, "version: 1\n").unwrap();
    let proxy = Proxy::start(&bin(), &policy, &[]).unwrap();
    let status = proxy.terminate().unwrap();
    assert!(status.success(), "{status}");
}
