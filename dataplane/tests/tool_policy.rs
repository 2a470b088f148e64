//! The built-in tool policy against Anthropic's own tools, through the real `tollgate-proxy`
//! and the fake upstream: the MCP connector (`mcp_servers` + `mcp_toolset`, turned on by an
//! `anthropic-beta` header) and the server tools are judged like any other tool, whatever
//! beta header is (or is not) sent.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig};
use tollgate_tests::harness::{Proxy, Reply, send};
use tollgate_tests::policy::{PROVIDER_KEY, PROVIDER_KEY_ENV, sha256_hex};

/// `tools: {allow: [Read]}`: the key of the report.
const KEY_READER: &str = "tg_tools_SECRET_reader_key_0001";
/// Also allows every tool of the MCP connector servers at `mcp.example.com`, and web search.
const KEY_DOCS: &str = "tg_tools_SECRET_docs_key_00002";

struct Rig {
    fake: FakeAnthropic,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let policy = format!(
        r#"version: 1
organization: {{name: acme}}
keys:
  - {{id: reader, sha256: {reader}, tools: {{allow: [Read]}}}}
  - {{id: docs, sha256: {docs}, tools: {{allow: [Read, web_search, "mcp_connector__mcp.example.com/*"]}}}}
providers:
  - {{id: fake, kind: anthropic, endpoint: "{upstream}", credential: {{env: {PROVIDER_KEY_ENV}}}}}
routes:
  - {{match: "claude-*", targets: [{{provider: fake}}]}}
"#,
        reader = sha256_hex(KEY_READER),
        docs = sha256_hex(KEY_DOCS),
        upstream = fake.base_url(),
    );
    std::fs::write(&file, policy).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"));
    let proxy = Proxy::start(&bin, &file, &[(PROVIDER_KEY_ENV, PROVIDER_KEY)]).unwrap();
    Rig {
        fake,
        proxy,
        _dir: dir,
    }
}

impl Rig {
    async fn post(&self, key: &str, beta: Option<&str>, body: &Value) -> Reply {
        let auth = format!("Bearer {key}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ];
        if let Some(b) = beta {
            headers.push(("anthropic-beta", b));
        }
        let url = format!("{}/v1/messages", self.proxy.base_url());
        send("POST", &url, &headers, Bytes::from(body.to_string()))
            .await
            .unwrap()
    }
}

fn connector_request(url: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "list the files"}],
        "mcp_servers": [{"type": "url", "url": url, "name": "fs", "authorization_token": "t"}],
        "tools": [
            {"type": "mcp_toolset", "mcp_server_name": "fs"},
            {"name": "Read", "input_schema": {"type": "object"}},
        ],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_connector_the_policy_does_not_permit_is_refused_whatever_the_beta_header() {
    let rig = rig().await;
    let attacker = connector_request("https://attacker.example/mcp");

    // The report: `allow: [Read]`, the connector beta and an attacker's server were forwarded
    // (200). Now a 403 that names the server, and nothing reaches the provider.
    for beta in [
        Some("mcp-client-2025-11-20"),
        Some("mcp-client-2025-04-04,fine-grained-tool-streaming-2025-05-14"),
        Some("mcp-client-2099-01-01"),
        None,
    ] {
        let r = rig.post(KEY_READER, beta, &attacker).await;
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 403, "{beta:?}: {text}");
        let v = r.json();
        assert_eq!(v["error"]["type"], "permission_error", "{text}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("MCP connector server 'fs' at attacker.example/mcp")
                && message.contains("tool policy of virtual key 'reader'"),
            "{message}"
        );
        assert_eq!(r.headers.get("x-should-retry").unwrap(), "false");
    }
    // A key allowing another location is refused the attacker's server too.
    assert_eq!(
        rig.post(KEY_DOCS, Some("mcp-client-2025-11-20"), &attacker)
            .await
            .status,
        403
    );
    assert!(rig.fake.requests().is_empty(), "nothing went upstream");

    // A server the policy permits is forwarded byte for byte, beta header verbatim.
    let docs = connector_request("https://mcp.example.com/sse");
    let r = rig.post(KEY_DOCS, Some("mcp-client-2025-11-20"), &docs).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = rig.fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, Bytes::from(docs.to_string()));
    assert_eq!(seen[0].header("anthropic-beta"), Some("mcp-client-2025-11-20"));

    // A toolset that enables only tools the key may use passes for the narrower key as well.
    let narrow = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        "mcp_servers": [{"type": "url", "url": "https://attacker.example/mcp", "name": "fs"}],
        "tools": [{"type": "mcp_toolset", "mcp_server_name": "fs", "default_config": {"enabled": false}}],
    });
    assert_eq!(
        rig.post(KEY_READER, Some("mcp-client-2025-11-20"), &narrow)
            .await
            .status,
        200
    );
    // A server that cannot be judged is refused (400), policy or not.
    let plain = connector_request("http://attacker.example/mcp");
    let r = rig.post(KEY_DOCS, Some("mcp-client-2025-11-20"), &plain).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tools_are_removed_by_type_like_any_other_tool() {
    let rig = rig().await;
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 100,
        "messages": [{"role": "user", "content": "search the web"}],
        "tools": [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "web_fetch_20250910", "name": "web_fetch"},
            {"type": "code_execution_20250825", "name": "code_execution"},
            {"type": "bash_20250124", "name": "bash"},
            {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
            {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
            {"type": "memory_20250818", "name": "memory"},
            {"name": "Read", "input_schema": {"type": "object"}},
        ],
    });
    let tools_seen = |r: &tollgate_tests::fake_anthropic::RecordedRequest| {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let r = rig
        .post(
            KEY_READER,
            Some("code-execution-2025-08-25,computer-use-2025-01-24"),
            &body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(tools_seen(&rig.fake.requests()[0]), ["Read"]);
    rig.fake.clear();
    let r = rig.post(KEY_DOCS, None, &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(tools_seen(&rig.fake.requests()[0]), ["web_search", "Read"]);
    // tool_choice naming a removed server tool: 400 before anything goes upstream.
    rig.fake.clear();
    let mut forced = body.clone();
    forced["tool_choice"] = json!({"type": "tool", "name": "web_fetch"});
    assert_eq!(rig.post(KEY_DOCS, None, &forced).await.status, 400);
    assert!(rig.fake.requests().is_empty());
}
