//! OpenTelemetry traces end to end: the real `tollgate-proxy` exports over OTLP/HTTP to a
//! real receiver built on the official protobuf definitions (`e2e/otel/receiver.py`), in
//! front of the fake Anthropic upstream; the real Claude Code drives one test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_tests::claude::{claude_bin, run_claude};
use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig};
use tollgate_tests::harness::{Proxy, send};
use tollgate_tests::mcp::{e2e_dir, free_port, python};
use tollgate_tests::policy::{KEY_ALICE, KEY_HAIKU, PROVIDER_KEY, PROVIDER_KEY_ENV, standard_policy};

/// The client's trace: its trace id and the id of its span (ours is that span's child).
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The OTLP receiver: a Python process writing each span it gets as a JSON line.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let port = free_port();
        let out = dir.join("spans.jsonl");
        let child = Command::new(python())
            .arg(e2e_dir().join("otel/receiver.py"))
            .args(["--port", &port.to_string()])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the OTLP receiver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the OTLP receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver { child, port, out }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far, with its raw line.
    fn spans(&self) -> Vec<(Value, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok().map(|v| (v, l.to_owned())))
            .collect()
    }

    /// Waits until a received span satisfies `want`, and returns it.
    async fn wait_for(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((s, _)) = self.spans().into_iter().find(|(s, _)| want(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no span {what} arrived; received: {:#?}",
                self.spans().into_iter().map(|(s, _)| s).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts that no span carries a key or a credential.
    fn assert_no_secrets(&self) {
        for (_, line) in self.spans() {
            for secret in [KEY_ALICE, KEY_HAIKU, PROVIDER_KEY, "SECRET"] {
                assert!(!line.contains(secret), "a span carries a secret: {line}");
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Rig {
    fake: FakeAnthropic,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

/// The fake upstream and the proxy in front of it, with `env` (the OTEL settings).
async fn rig(env: &[(&str, &str)]) -> Rig {
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, standard_policy(&fake.base_url(), true)).unwrap();
    let mut all = vec![(PROVIDER_KEY_ENV, PROVIDER_KEY)];
    all.extend_from_slice(env);
    let proxy = Proxy::start(&bin(), &policy, &all).unwrap();
    Rig {
        fake,
        proxy,
        _dir: dir,
    }
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

/// The OTEL environment of a proxy exporting to `receiver`, quickly.
fn otel_env(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test".into(),
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-tenant=acme".into()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A Messages request of `key` for `model`, with extra headers.
async fn messages(
    rig: &Rig,
    key: &str,
    model: &str,
    extra: &[(&str, &str)],
) -> tollgate_tests::harness::Reply {
    let body = json!({
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let mut headers = vec![
        ("x-api-key", key),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    let url = format!("{}/anthropic/v1/messages", rig.proxy.base_url());
    send("POST", &url, &headers, Bytes::from(body.to_string()))
        .await
        .unwrap()
}

fn attr<'a>(span: &'a Value, name: &str) -> &'a Value {
    &span["attributes"][name]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_request_is_a_genai_span_in_the_clients_trace() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let env = otel_env(&receiver);
    let rig = rig(&borrowed(&env)).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = messages(
        &rig,
        KEY_ALICE,
        "claude-haiku-4-5",
        &[
            ("traceparent", traceparent.as_str()),
            ("tracestate", "vendor=opaque"),
            ("x-claude-code-session-id", "session-otel-1"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let span = receiver
        .wait_for("in the client's trace", |s| s["trace_id"] == CLIENT_TRACE)
        .await;
    assert_eq!(span["parent_span_id"], CLIENT_SPAN, "{span:#}");
    assert_eq!(span["name"], "chat claude-haiku-4-5");
    assert_eq!(span["kind"], 3, "SPAN_KIND_CLIENT");
    assert_eq!(span["status_code"], 0, "unset: no error");
    assert_eq!(span["scope"], "tollgate-proxy");
    for (name, want) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("anthropic")),
        ("gen_ai.system", json!("anthropic")),
        ("gen_ai.request.model", json!("claude-haiku-4-5")),
        ("gen_ai.response.model", json!("claude-haiku-4-5")),
        ("gen_ai.request.max_tokens", json!(64)),
        ("tollgate.key_id", json!("alice")),
        ("tollgate.team", json!("platform")),
        ("tollgate.user", json!("alice@acme.example")),
        ("tollgate.session_id", json!("session-otel-1")),
        ("tollgate.provider", json!("fake")),
        ("tollgate.budget.decision", json!("admitted")),
        ("tollgate.outcome", json!("ended")),
        ("http.response.status_code", json!(200)),
    ] {
        assert_eq!(attr(&span, name), &want, "{name} in {span:#}");
    }
    for name in [
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "tollgate.cost_micro_usd",
    ] {
        assert!(
            attr(&span, name).as_i64().is_some_and(|n| n > 0),
            "{name} in {span:#}"
        );
    }
    assert_eq!(attr(&span, "gen_ai.usage.cache_read.input_tokens"), &json!(0));
    assert_eq!(span["resource"]["service.name"], "tollgate-proxy");
    assert_eq!(span["resource"]["deployment.environment.name"], "test");
    assert_eq!(
        span["headers"]["x-collector-tenant"], "acme",
        "OTEL_EXPORTER_OTLP_HEADERS sent"
    );

    // The provider got our span as its parent, in the client's trace, with its tracestate.
    let upstream = rig.fake.requests();
    let sent = upstream
        .iter()
        .find(|r| r.path == "/v1/messages")
        .expect("the upstream request");
    let tp = sent.header("traceparent").expect("a traceparent upstream");
    assert_eq!(
        tp,
        format!("00-{CLIENT_TRACE}-{}-01", span["span_id"].as_str().unwrap()),
        "a new traceparent naming the gateway's span"
    );
    assert_ne!(tp, traceparent, "never the client's unchanged");
    assert_eq!(sent.header("tracestate"), Some("vendor=opaque"));

    // A refusal: an error span, with the refusal as its budget decision and error type.
    let reply = messages(&rig, KEY_HAIKU, "gw-opus", &[]).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let refused = receiver
        .wait_for("of the refusal", |s| attr(s, "tollgate.key_id") == "haiku-only")
        .await;
    assert_eq!(refused["name"], "chat gw-opus");
    assert_eq!(refused["status_code"], 2, "error: {refused:#}");
    assert_eq!(attr(&refused, "http.response.status_code"), &json!(403));
    let reason = attr(&refused, "tollgate.denial.reason").as_str().unwrap();
    assert_eq!(attr(&refused, "error.type"), reason);
    assert_eq!(attr(&refused, "tollgate.budget.decision"), reason);
    assert_eq!(attr(&refused, "tollgate.team"), "interns");
    assert!(
        refused["parent_span_id"].as_str().unwrap().is_empty(),
        "no client trace: a root span"
    );
    // Without a valid key, no span at all: an anonymous client can neither add spans nor
    // steer sampling with a sampled `traceparent` of its choosing.
    let forged = "00-bbbbbbbbbbbbbbbb0000000000000001-00f067aa0ba902b7-01";
    let before = receiver.spans().len();
    let reply = messages(
        &rig,
        "tg_not_a_key",
        "claude-sonnet-4-5",
        &[("traceparent", forged)],
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    let reply = messages(&rig, KEY_ALICE, "claude-sonnet-4-5", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    receiver
        .wait_for("of the request after the anonymous one", |s| {
            attr(s, "tollgate.key_id") == "alice" && s["parent_span_id"].as_str().is_some_and(str::is_empty)
        })
        .await;
    let after = receiver.spans();
    assert!(
        after[before..]
            .iter()
            .all(|(s, _)| s["trace_id"].as_str() != Some("bbbbbbbbbbbbbbbb0000000000000001")),
        "the anonymous request made no span"
    );
    receiver.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_sessions_are_traced_without_secrets() {
    let Some(claude) = claude_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let env = otel_env(&receiver);
    let rig = rig(&borrowed(&env)).await;
    let base = format!("{}/anthropic", rig.proxy.base_url());
    let run = tokio::task::block_in_place(|| {
        run_claude(
            &claude,
            &["-p", "say hi", "--model", "claude-haiku-4-5"],
            &[
                ("ANTHROPIC_BASE_URL", base.as_str()),
                ("ANTHROPIC_AUTH_TOKEN", KEY_ALICE),
            ],
            None,
        )
    });
    assert!(
        !run.is_error(),
        "{}\nproxy logs:\n{}",
        run.output(),
        rig.proxy.logs()
    );

    let session = rig
        .fake
        .requests()
        .iter()
        .find_map(|r| r.header("x-claude-code-session-id").map(str::to_owned))
        .expect("Claude Code names its session");
    let span = receiver
        .wait_for("of Claude Code's chat", |s| {
            attr(s, "gen_ai.operation.name") == "chat" && attr(s, "tollgate.session_id") == session.as_str()
        })
        .await;
    assert_eq!(attr(&span, "tollgate.key_id"), "alice");
    assert_eq!(attr(&span, "tollgate.provider"), "fake");
    assert_eq!(attr(&span, "gen_ai.provider.name"), "anthropic");
    assert_eq!(attr(&span, "gen_ai.request.model"), "claude-haiku-4-5");
    assert!(
        attr(&span, "gen_ai.usage.output_tokens")
            .as_i64()
            .is_some_and(|n| n > 0)
    );
    assert!(
        attr(&span, "tollgate.cost_micro_usd")
            .as_i64()
            .is_some_and(|n| n > 0)
    );
    // Every upstream request names a span the receiver got (batches still in flight land).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for r in rig.fake.requests().iter().filter(|r| r.path == "/v1/messages") {
        let tp = r.header("traceparent").expect("a traceparent upstream");
        let ours = receiver.spans().into_iter().any(|(s, _)| {
            tp.contains(s["span_id"].as_str().unwrap_or("-"))
                && tp.contains(s["trace_id"].as_str().unwrap_or("-"))
        });
        assert!(ours, "upstream traceparent {tp} names a span the receiver got");
    }
    receiver.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otel_settings_nothing_is_exported_and_trace_headers_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    // Tracing explicitly off, though an endpoint is set.
    let off = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_TRACES_EXPORTER", "none".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let muted = rig(&borrowed(&off)).await;
    // No OTEL settings at all.
    let plain = rig(&[]).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    for rig in [&muted, &plain] {
        let reply = messages(
            rig,
            KEY_ALICE,
            "claude-haiku-4-5",
            &[("traceparent", traceparent.as_str())],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        // Tracing off: the gateway is transparent to trace context.
        let sent = rig.fake.requests();
        assert_eq!(sent[0].header("traceparent"), Some(traceparent.as_str()));
        assert!(!rig.proxy.logs().contains("exporting OpenTelemetry traces"));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(receiver.spans().is_empty(), "{:?}", receiver.spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_queued_spans() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let mut env = otel_env(&receiver);
    // Batches would wait a minute: only the shutdown's flush can send this one in time.
    env.retain(|(k, _)| *k != "OTEL_BSP_SCHEDULE_DELAY");
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "60000".into()));
    let rig = rig(&borrowed(&env)).await;
    let reply = messages(&rig, KEY_ALICE, "claude-haiku-4-5", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.spans().is_empty(), "not yet exported");
    let Rig { proxy, .. } = rig;
    let status = tokio::task::block_in_place(|| proxy.terminate()).unwrap();
    assert!(status.success(), "{status}");
    receiver
        .wait_for("flushed at shutdown", |s| attr(s, "tollgate.key_id") == "alice")
        .await;
}

#[test]
fn otlp_over_grpc_is_refused_at_start_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, standard_policy("http://127.0.0.1:9", true)).unwrap();
    let err = Proxy::start(
        &bin(),
        &policy,
        &[
            (PROVIDER_KEY_ENV, PROVIDER_KEY),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    )
    .err()
    .expect("the proxy refuses to start");
    assert!(err.to_string().contains("OTLP/gRPC is not built in"), "{err}");
}
