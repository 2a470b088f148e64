//! The audit trail in the real `tollgate-proxy` binary: one record per accounted exchange,
//! denial, policy reload and budget threshold; content capture; shipping to a webhook; and
//! a SIGKILL under load, after which the chain continues and nothing spooled is lost.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_dataplane::audit::checkpoint::Verifier;
use tollgate_dataplane::audit::verify::{VerifyOptions, verify};
use tollgate_dataplane::policy::document::CheckpointAlgorithm;
use tollgate_tests::fake_anthropic::{DEFAULT_REPLY, FakeAnthropic, FakeConfig};
use tollgate_tests::harness::{Proxy, Reply, send};
use tollgate_tests::policy::{
    KEY_ALICE, KEY_HAIKU, KEY_OFF, PROVIDER_KEY, PROVIDER_KEY_ENV, standard_policy, write_atomically,
};
use tollgate_tests::sinks::{Format, Receiver};

const CHECKPOINT_KEY: &str = "audit-checkpoint-secret-0123456789";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

struct Rig {
    fake: FakeAnthropic,
    webhook: Receiver,
    dir: tempfile::TempDir,
    upstream: String,
}

impl Rig {
    async fn new() -> Rig {
        let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
        let webhook = Receiver::start(Format::Webhook(Some("wh-secret".into())))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("checkpoint.key"), CHECKPOINT_KEY).unwrap();
        std::fs::write(dir.path().join("webhook.secret"), "wh-secret").unwrap();
        let upstream = fake.base_url();
        let rig = Rig {
            fake,
            webhook,
            dir,
            upstream,
        };
        rig.write_policy(true);
        rig
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn write_policy(&self, with_alice: bool) {
        let d = self.dir.path().display();
        let audit = format!(
            r#"budgets:
  - {{id: platform-daily, scope: {{kind: team, name: platform}}, limit_micro_usd: 10000, period: daily, thresholds: [1]}}
audit:
  capture: full
  capture_max_bytes: 60
  checkpoint: {{algorithm: hmac_sha256, key: {{file: "{d}/checkpoint.key"}}, every_records: 5}}
  sinks:
    - name: hook
      kind: webhook
      endpoint: "{hook}"
      credential: {{file: "{d}/webhook.secret"}}
      batch: {{max_records: 50, max_wait_ms: 20}}
      retry: {{initial_backoff_ms: 20, max_backoff_ms: 200}}
"#,
            hook = self.webhook.base_url()
        );
        write_atomically(
            &self.policy(),
            &format!("{}{audit}", standard_policy(&self.upstream, with_alice)),
        )
        .unwrap();
    }

    fn start(&self) -> Proxy {
        Proxy::start_with_args(
            &bin(),
            &self.policy(),
            &[(PROVIDER_KEY_ENV, PROVIDER_KEY)],
            &["--audit-dir", self.spool().to_str().unwrap()],
        )
        .unwrap()
    }
}

async fn messages(proxy: &Proxy, key: &str, model: &str, stream: bool) -> Reply {
    let body = json!({
        "model": model, "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": "say hi, and this prompt is long enough to be cut by capture"}],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}],
    });
    let auth = format!("Bearer {key}");
    send(
        "POST",
        &format!("{}/anthropic/v1/messages", proxy.base_url()),
        &[
            ("authorization", &auth),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
            ("x-claude-code-session-id", "sess-1234"),
        ],
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap()
}

fn spooled(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, seg) in tollgate_dataplane::audit::spool::list_segments(dir).unwrap() {
        for line in std::fs::read_to_string(seg).unwrap().split_inclusive('\n') {
            if line.ends_with('\n') {
                out.push(serde_json::from_str(line.trim_end()).unwrap());
            }
        }
    }
    out
}

fn verify_ok(dir: &Path) -> u64 {
    let r = verify(
        dir,
        &VerifyOptions {
            verifier: Some(Verifier::from_secret(CheckpointAlgorithm::HmacSha256, CHECKPOINT_KEY).unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.ok(), "{r:?}");
    assert!(r.signatures_verified > 0, "{r:?}");
    r.last_seq
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn kind<'a>(records: &'a [Value], k: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == k).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_exchange_denial_reload_and_threshold_is_recorded_and_shipped() {
    let rig = Rig::new().await;
    let proxy = rig.start();
    assert_eq!(messages(&proxy, KEY_ALICE, "gw-opus", false).await.status, 200);
    assert_eq!(messages(&proxy, KEY_ALICE, "gw-opus", true).await.status, 200);
    assert_eq!(
        messages(&proxy, KEY_HAIKU, "claude-haiku-4-5", false)
            .await
            .status,
        200
    );
    assert_eq!(messages(&proxy, KEY_OFF, "gw-opus", false).await.status, 403);
    assert_eq!(messages(&proxy, KEY_HAIKU, "gw-opus", false).await.status, 403);
    // A reload that revokes alice: recorded, and her next request is a recorded denial.
    rig.write_policy(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while messages(&proxy, KEY_ALICE, "gw-opus", false).await.status == 200 {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = proxy.metrics().await.unwrap();
    assert!(
        metrics.contains("tollgate_audit_records_total{kind=\"model_request\"}"),
        "{metrics}"
    );
    proxy.terminate().unwrap();

    let head = verify_ok(&rig.spool());
    let records = spooled(&rig.spool());
    assert_eq!(records.len() as u64, head);
    let calls = kind(&records, "model_request");
    let upstream_calls = rig
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/v1/messages"))
        .count();
    assert_eq!(calls.len(), upstream_calls, "one record per model call");
    let c = &calls[0]["body"];
    assert_eq!(c["key_id"], "alice");
    assert_eq!(c["user"], "alice@acme.example");
    assert_eq!(c["team"], "platform");
    assert_eq!(c["session_id"], "sess-1234");
    assert_eq!(c["model"], "gw-opus");
    assert_eq!(c["upstream_model"], "claude-opus-4-8");
    assert_eq!(c["provider"], "fake");
    assert_eq!(c["status"], 200);
    assert!(c["tokens"]["input"].as_u64().unwrap() > 0 && c["tokens"]["output"].as_u64().unwrap() > 0);
    assert!(c["cost_micro_usd"].as_u64().unwrap() > 0);
    assert!(c["latency_ms"].is_u64());
    // Full capture, cut at 60 bytes.
    assert_eq!(c["capture"], "full");
    assert_eq!(c["content"]["tools"], json!(["Bash"]));
    assert_eq!(c["content"]["prompt"].as_str().unwrap().len(), 60);
    assert_eq!(c["content"]["prompt_truncated"], true);
    assert_eq!(c["content"]["completion"], DEFAULT_REPLY);
    assert_eq!(
        calls[1]["body"]["content"]["completion"], DEFAULT_REPLY,
        "streamed text captured"
    );
    let denials = kind(&records, "denial");
    let reasons: Vec<&str> = denials
        .iter()
        .map(|d| d["body"]["reason"].as_str().unwrap())
        .collect();
    assert!(denials.len() >= 3, "{reasons:?}");
    assert!(
        denials
            .iter()
            .any(|d| d["body"]["key_id"] == "haiku-only" && d["body"]["status"] == 403)
    );
    assert!(
        denials
            .iter()
            .any(|d| d["body"]["key_id"].is_null() && d["body"]["session_id"] == "sess-1234")
    );
    let reloads = kind(&records, "policy_reload");
    assert!(reloads.len() >= 2, "start and reload");
    assert!(
        reloads
            .iter()
            .all(|r| r["body"]["result"] == "applied" && r["body"]["revision"].is_string())
    );
    let thresholds = kind(&records, "budget_threshold");
    assert_eq!(thresholds.len(), 1, "{thresholds:?}");
    assert_eq!(thresholds[0]["body"]["budget"], "platform-daily");
    assert_eq!(thresholds[0]["body"]["threshold_percent"], 1);
    assert_eq!(thresholds[0]["body"]["key_id"], "alice");
    // Shipped: the webhook holds every record, in order, signed (the receiver checks).
    eventually("webhook caught up", || {
        rig.webhook.unique_records().len() as u64 >= head
    })
    .await;
    let shipped = rig.webhook.unique_records();
    assert_eq!(shipped, records, "the webhook holds exactly the spooled chain");
    assert!(
        rig.webhook.violations().is_empty(),
        "{:?}",
        rig.webhook.violations()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_nothing_spooled_and_the_chain_continues() {
    let rig = Rig::new().await;
    let proxy = rig.start();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for i in 0..8 {
        let (stop, ok, url) = (stop.clone(), ok.clone(), proxy.base_url());
        load.push(tokio::spawn(async move {
            let body = json!({"model": "claude-haiku-4-5", "max_tokens": 16, "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": "hi"}]});
            while !stop.load(Ordering::SeqCst) {
                let r = send(
                    "POST",
                    &format!("{url}/v1/messages"),
                    &[
                        ("x-api-key", KEY_HAIKU),
                        ("anthropic-version", "2023-06-01"),
                        ("content-type", "application/json"),
                    ],
                    Bytes::from(body.to_string()),
                )
                .await;
                if matches!(r, Ok(ref r) if r.status == 200) {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    eventually("load under way", || ok.load(Ordering::SeqCst) >= 300).await;
    let status = Command::new("kill")
        .args(["-KILL", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stop.store(true, Ordering::SeqCst);
    for t in load {
        let _ = t.await;
    }
    drop(proxy);
    let before = spooled(&rig.spool());
    let before_ids: HashSet<String> = before
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let last_before = before.last().unwrap()["seq"].as_u64().unwrap();
    assert!(kind(&before, "model_request").len() >= 250, "{}", before.len());

    // Restart on the same spool: the torn tail (if any) is cut and the chain goes on.
    let proxy = rig.start();
    for _ in 0..10 {
        assert_eq!(
            messages(&proxy, KEY_HAIKU, "claude-haiku-4-5", false)
                .await
                .status,
            200
        );
    }
    proxy.terminate().unwrap();
    let head = verify_ok(&rig.spool());
    let after = spooled(&rig.spool());
    let after_ids: HashSet<String> = after
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        before_ids.is_subset(&after_ids),
        "records spooled before the kill were lost"
    );
    assert!(head > last_before + 10);
    assert_eq!(
        after[last_before as usize]["kind"], "policy_reload",
        "the restart's first record follows the last one"
    );

    // Every spooled record reaches the webhook (at-least-once across the crash), in order.
    let rig2 = Rig {
        fake: rig.fake,
        webhook: rig.webhook,
        dir: rig.dir,
        upstream: rig.upstream,
    };
    if (rig2.webhook.unique_records().len() as u64) < head {
        // The final checkpoint may still be in the spool: a short restart ships it.
        let p = rig2.start();
        eventually("webhook caught up", || {
            rig2.webhook.unique_records().len() as u64 >= head
        })
        .await;
        p.terminate().unwrap();
    }
    let shipped = rig2.webhook.unique_records();
    assert_eq!(&shipped[..head as usize], &after[..head as usize]);
    assert!(rig2.webhook.violations().is_empty());
}
