//! The MCP gateway in the audit trail and under flooding, through the real binary: every
//! `tools/call` (allowed, denied, unknown) and every MCP refusal is a record, with fields
//! taken from the request bounded; one key cannot take the whole session table.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_dataplane::audit::spool::list_segments;
use tollgate_dataplane::audit::verify::{VerifyOptions, verify};
use tollgate_tests::harness::{Proxy, Reply, send};
use tollgate_tests::policy::sha256_hex;

const KEY_ALICE: &str = "tg_mcp_audit_SECRET_alice_0001";
const KEY_BOB: &str = "tg_mcp_audit_SECRET_bob_00002";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"))
}

/// Alice may call `read_*` tools of `fs`, Bob every tool; `fs` is down (nothing listens).
fn policy() -> String {
    format!(
        r#"version: 1
organization: {{name: acme}}
teams: [{{id: platform}}]
keys:
  - {{id: alice, sha256: {a}, user: alice@acme.example, team: platform, mcp: [{{server: fs, allow: ["read_*"]}}]}}
  - {{id: bob, sha256: {b}, team: platform, mcp: [{{server: fs}}]}}
mcp_servers:
  - {{name: fs, url: "http://127.0.0.1:9/mcp"}}
"#,
        a = sha256_hex(KEY_ALICE),
        b = sha256_hex(KEY_BOB),
    )
}

struct Rig {
    proxy: Proxy,
    dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, policy()).unwrap();
        let spool = dir.path().join("spool");
        let proxy =
            Proxy::start_with_args(&bin(), &file, &[], &["--audit-dir", spool.to_str().unwrap()]).unwrap();
        Rig { proxy, dir }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    async fn rpc(&self, key: &str, session: Option<&str>, body: Value) -> Reply {
        let auth = format!("Bearer {key}");
        let mut h = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2025-06-18"),
        ];
        if let Some(s) = session {
            h.push(("mcp-session-id", s));
        }
        send(
            "POST",
            &format!("{}/mcp", self.proxy.base_url()),
            &h,
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap()
    }

    async fn initialize(&self, key: &str) -> Reply {
        self.rpc(
            key,
            None,
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .await
    }
}

fn session_of(r: &Reply) -> String {
    r.headers["mcp-session-id"].to_str().unwrap().to_owned()
}

fn call(id: u64, name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {}}})
}

fn spooled(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, seg) in list_segments(dir).unwrap() {
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tool_calls_and_refusals_are_audit_records() {
    let rig = Rig::start();
    let r = rig.initialize("tg_not_a_key_at_all").await;
    assert_eq!(r.status, 401);
    let r = rig.initialize(KEY_ALICE).await;
    assert_eq!(r.status, 200);
    let sid = session_of(&r);
    let allowed = rig.rpc(KEY_ALICE, Some(&sid), call(1, "fs__read_file")).await;
    assert_eq!(
        allowed.json()["error"]["code"],
        -32603,
        "fs is down: {:?}",
        allowed.json()
    );
    let denied = rig.rpc(KEY_ALICE, Some(&sid), call(2, "fs__write_file")).await;
    assert_eq!(denied.json()["error"]["code"], -32602);
    let long = format!("fs__{}", "x".repeat(10_000));
    let unknown = rig
        .rpc(KEY_ALICE, Some(&sid), call(3, &format!("nope__{long}")))
        .await;
    assert_eq!(unknown.json()["error"]["code"], -32602);
    let spool = rig.spool();
    rig.proxy.terminate().unwrap();

    let r = verify(&spool, &VerifyOptions::default()).unwrap();
    assert!(r.ok(), "{r:?}");
    let records = spooled(&spool);
    for rec in &records {
        assert!(rec.to_string().len() < 4096, "{rec}");
    }
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "mcp_tool_call")
        .map(|r| &r["body"])
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for c in &calls {
        assert_eq!(c["key_id"], "alice");
        assert_eq!(c["user"], "alice@acme.example");
        assert_eq!(c["team"], "platform");
        assert_eq!(c["session_id"], sid.as_str(), "the MCP session");
        assert!(c["request_id"].as_str().unwrap().starts_with("req_tg_"), "{c}");
    }
    assert_eq!(
        (
            &calls[0]["server"],
            &calls[0]["tool"],
            &calls[0]["allowed"],
            &calls[0]["outcome"]
        ),
        (
            &json!("fs"),
            &json!("read_file"),
            &json!(true),
            &json!("unavailable")
        )
    );
    assert_eq!(
        (&calls[1]["tool"], &calls[1]["allowed"], &calls[1]["outcome"]),
        (&json!("write_file"), &json!(false), &json!("denied"))
    );
    assert_eq!(calls[1]["reason"], "denied by policy");
    assert_eq!(
        (&calls[2]["allowed"], &calls[2]["outcome"]),
        (&json!(false), &json!("unknown"))
    );
    let tool = calls[2]["tool"].as_str().unwrap();
    assert_eq!(
        tool.chars().count(),
        257,
        "bounded, with the elision mark: {tool}"
    );
    let refusals: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "denial")
        .map(|r| &r["body"])
        .collect();
    assert!(
        refusals
            .iter()
            .any(|d| d["reason"] == "unknown_key" && d["status"] == 401 && d["key_id"].is_null()),
        "{refusals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_fill_the_mcp_session_table() {
    let rig = Rig::start();
    let mut sessions = Vec::new();
    let refusal = loop {
        let r = rig.initialize(KEY_ALICE).await;
        if r.status != 200 {
            break r;
        }
        sessions.push(session_of(&r));
        assert!(sessions.len() <= 200, "a key opened 200 sessions and counting");
    };
    assert_eq!(sessions.len(), 64, "the documented per-key quota");
    assert_eq!(refusal.status, 429);
    let err = &refusal.json()["error"];
    assert_eq!(refusal.json()["jsonrpc"], "2.0");
    assert_eq!(err["code"], -32001, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("64") && msg.contains("alice"), "{msg}");
    assert!(refusal.headers.contains_key("retry-after"));
    // Another key is unaffected.
    assert_eq!(rig.initialize(KEY_BOB).await.status, 200);
    // Ending one of alice's sessions makes room for one more.
    let r = send(
        "DELETE",
        &format!("{}/mcp", rig.proxy.base_url()),
        &[
            ("authorization", &format!("Bearer {KEY_ALICE}")),
            ("mcp-session-id", &sessions[0]),
        ],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(rig.initialize(KEY_ALICE).await.status, 200);
    assert_eq!(rig.initialize(KEY_ALICE).await.status, 429);
    let spool = rig.spool();
    rig.proxy.terminate().unwrap();
    let quota: Vec<Value> = spooled(&spool)
        .into_iter()
        .filter(|r| r["kind"] == "denial" && r["body"]["reason"] == "mcp_session_quota")
        .collect();
    assert_eq!(quota.len(), 2, "{quota:?}");
    assert_eq!(quota[0]["body"]["key_id"], "alice");
    assert_eq!(quota[0]["body"]["status"], 429);
}
