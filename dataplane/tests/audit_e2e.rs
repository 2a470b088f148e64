//! End to end: a real Claude Code session (a tool loop) through `tollgate-proxy` with audit
//! on; then `tollgate-proxy audit verify` passes on the spool and the webhook receiver holds
//! exactly one `model_request` record per model call, with Claude Code's session id.
//! Run `make test` (or `npm ci --prefix e2e`) first so `e2e/node_modules/.bin/claude` exists.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_tests::claude::{claude_bin, run_claude};
use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig};
use tollgate_tests::harness::Proxy;
use tollgate_tests::policy::{KEY_ALICE, PROVIDER_KEY, PROVIDER_KEY_ENV, standard_policy};
use tollgate_tests::sinks::{Format, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_session_is_audited_and_verifiable() {
    let Some(claude) = claude_bin() else { return };
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let webhook = Receiver::start(Format::Webhook(Some("e2e-webhook-secret".into())))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cp.key"), "e2e-checkpoint-secret-0123456789").unwrap();
    std::fs::write(d.join("wh.secret"), "e2e-webhook-secret").unwrap();
    let policy = d.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            r#"{}audit:
  capture: metadata
  checkpoint: {{key: {{file: "{}"}}, every_records: 3}}
  sinks:
    - {{name: siem, kind: webhook, endpoint: "{}", credential: {{file: "{}"}}, batch: {{max_wait_ms: 20}}}}
"#,
            standard_policy(&fake.base_url(), true),
            d.join("cp.key").display(),
            webhook.base_url(),
            d.join("wh.secret").display()
        ),
    )
    .unwrap();
    let spool = d.join("spool");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"));
    let proxy = Proxy::start_with_args(
        &bin,
        &policy,
        &[(PROVIDER_KEY_ENV, PROVIDER_KEY)],
        &["--audit-dir", spool.to_str().unwrap()],
    )
    .unwrap();

    let base = format!("{}/anthropic", proxy.base_url());
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
    assert!(!run.is_error(), "{}", run.output());
    let model_calls = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .count();
    assert!(model_calls >= 2, "a tool loop is at least two model calls");
    proxy.terminate().unwrap();

    // `audit verify` with the checkpoint key passes.
    let verify = Command::new(&bin)
        .args([
            "audit",
            "verify",
            spool.to_str().unwrap(),
            "--key",
            d.join("cp.key").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}");
    assert!(report.starts_with("ok: chain"), "{report}");
    assert!(!report.contains(" 0 signatures verified"), "{report}");

    // The webhook holds one model_request record per model call, with the session id.
    let deadline = Instant::now() + Duration::from_secs(20);
    let calls = loop {
        let calls: Vec<Value> = webhook
            .unique_records()
            .into_iter()
            .filter(|r| r["kind"] == "model_request")
            .collect();
        if calls.len() >= model_calls || Instant::now() > deadline {
            break calls;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(calls.len(), model_calls, "one audit record per model call");
    assert_eq!(
        webhook.records().len(),
        webhook.unique_records().len(),
        "none twice"
    );
    let session = calls[0]["body"]["session_id"]
        .as_str()
        .expect("Claude Code sends its session id");
    assert!(
        calls
            .iter()
            .all(|c| c["body"]["session_id"] == session && c["body"]["key_id"] == "alice")
    );
    assert!(calls.iter().any(|c| {
        c["body"]["content"]["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "Bash"))
    }));
    assert!(webhook.violations().is_empty(), "{:?}", webhook.violations());
    let logs = std::fs::read_to_string(
        spool.join(
            tollgate_dataplane::audit::spool::list_segments(&spool).unwrap()[0]
                .1
                .file_name()
                .unwrap(),
        ),
    )
    .unwrap();
    assert!(
        !logs.contains(KEY_ALICE) && !logs.contains(PROVIDER_KEY),
        "secrets in the audit trail"
    );
}
