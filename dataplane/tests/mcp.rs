//! The MCP gateway and the built-in tool policy, end to end with real processes: two upstream
//! MCP servers and an MCP client from the official Python SDK (pinned in
//! `e2e/requirements.txt`, installed into `e2e/.venv` by `e2e/setup-python.sh`, which these
//! tests run when the venv is missing), the real `tollgate-proxy`, the fake Anthropic upstream,
//! and the real Claude Code configured with `--mcp-config`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig};
use tollgate_tests::harness::{Proxy, send};
use tollgate_tests::mcp::{McpUpstream, e2e_dir, run_client};
use tollgate_tests::policy::{KEY_ALICE, PROVIDER_KEY, PROVIDER_KEY_ENV, sha256_hex, standard_policy};

/// Key `mcp-reader`: team `readers` grants alpha read_*/list_* and denies beta's `reverse`;
/// the key grants beta minus admin_*; its built-in tool policy removes Write, Edit and Bash.
const KEY_READER: &str = "tg_mcp_reader_SECRET_virtual_key_0005";
const ALPHA_TOKEN: &str = "sk-mcp-alpha-SECRET";
const BETA_TOKEN: &str = "sk-mcp-beta-SECRET";

struct Rig {
    fake: FakeAnthropic,
    proxy: Proxy,
    alpha: McpUpstream,
    beta: McpUpstream,
    dir: tempfile::TempDir,
}

/// The standard policy plus a shard with the two MCP servers, team `readers` and key
/// `mcp-reader` (a policy directory: lists are concatenated).
async fn rig() -> Rig {
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alpha = McpUpstream::start("alpha", ALPHA_TOKEN, 100, dir.path());
    let beta = McpUpstream::start("beta", BETA_TOKEN, 2, dir.path());
    let policy = dir.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(policy.join("a.yaml"), standard_policy(&fake.base_url(), true)).unwrap();
    let shard = format!(
        r#"version: 1
mcp_servers:
  - {{name: alpha, url: "{alpha}", credential: {{env: ALPHA_MCP_TOKEN}}}}
  - {{name: beta, url: "{beta}", credential: {{env: BETA_MCP_TOKEN}}}}
teams:
  - id: readers
    mcp:
      - {{server: alpha, allow: ["read_*", "list_*"]}}
      - {{server: beta, deny: [reverse]}}
keys:
  - id: mcp-reader
    sha256: {reader}
    team: readers
    mcp: [{{server: beta, deny: ["admin_*"]}}]
    tools: {{deny: [Write, Edit, Bash]}}
"#,
        alpha = alpha.url,
        beta = beta.url,
        reader = sha256_hex(KEY_READER),
    );
    std::fs::write(policy.join("b-mcp.yaml"), shard).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tollgate-proxy"));
    let proxy = Proxy::start(
        &bin,
        &policy,
        &[
            (PROVIDER_KEY_ENV, PROVIDER_KEY),
            ("ALPHA_MCP_TOKEN", ALPHA_TOKEN),
            ("BETA_MCP_TOKEN", BETA_TOKEN),
        ],
    )
    .unwrap();
    Rig {
        fake,
        proxy,
        alpha,
        beta,
        dir,
    }
}

/// Runs the Python SDK client through the gateway with `steps`; returns its JSON report.
fn client(rig: &Rig, key: &str, steps: &Value, mode: &str) -> Value {
    let url = format!("{}/mcp", rig.proxy.base_url());
    run_client(&url, key, steps, mode).unwrap_or_else(|e| panic!("{e}\nproxy logs:\n{}", rig.proxy.logs()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

const PERMITTED: [&str; 5] = [
    "alpha__read_file",
    "alpha__list_dir",
    "beta__add",
    "beta__echo",
    "beta__shout",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_sees_and_calls_only_permitted_tools() {
    let rig = std::sync::Arc::new(rig().await);
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "alpha__read_file", "args": {"path": "/srv/a.txt"}},
        {"op": "call", "name": "beta__add", "args": {"a": 2, "b": 3}},
        {"op": "call", "name": "alpha__delete_file", "args": {"path": "/srv/a.txt"}},
        {"op": "call", "name": "beta__admin_reset"},
        {"op": "call", "name": "beta__reverse", "args": {"text": "abc"}},
        {"op": "call", "name": "nosuch__tool"},
        {"op": "prompts"},
        {"op": "resources"},
    ]);
    let r = rig.clone();
    let report = blocking(move || client(&r, KEY_READER, &steps, "legacy")).await;
    let s = &report["steps"];
    assert_eq!(report["server"], "tollgate", "{report}");
    let listed: Vec<&str> = s[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, PERMITTED, "{report}");
    // beta pages 2 tools at a time: 5 tools are 3 upstream pages, so 3 gateway pages.
    assert_eq!(s[0]["pages"], 3, "pagination preserved: {report}");
    assert_eq!(s[1]["text"], "CONTENT of /srv/a.txt from alpha", "{report}");
    assert_eq!(s[2]["text"], "5", "{report}");
    for (i, tool) in [
        (3, "alpha__delete_file"),
        (4, "beta__admin_reset"),
        (5, "beta__reverse"),
    ] {
        assert_eq!(s[i]["error"]["code"], -32602, "{tool}: {report}");
        let msg = s[i]["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(tool) && msg.contains("not permitted") && msg.contains("mcp-reader"),
            "{msg}"
        );
    }
    assert!(
        s[6]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown tool")),
        "{report}"
    );
    assert_eq!(
        s[7]["prompts"],
        json!(["alpha__summarize", "beta__summarize"]),
        "{report}"
    );
    assert_eq!(
        s[8]["resources"],
        json!(["file:///alpha/readme.txt", "file:///beta/readme.txt"]),
        "{report}"
    );

    // Refused calls never reached an upstream; each upstream saw only its own credential.
    let (alpha, beta) = (rig.alpha.seen(), rig.beta.seen());
    assert!(
        alpha.contains("call read_file") && beta.contains("call add"),
        "{alpha}\n{beta}"
    );
    for gone in ["call delete_file", "call admin_reset", "call reverse"] {
        assert!(
            !alpha.contains(gone) && !beta.contains(gone),
            "{gone} reached upstream"
        );
    }
    for line in alpha.lines().filter(|l| !l.starts_with("call ")) {
        assert_eq!(line, format!("Bearer {ALPHA_TOKEN}"));
    }
    for line in beta.lines().filter(|l| !l.starts_with("call ")) {
        assert_eq!(line, format!("Bearer {BETA_TOKEN}"));
    }

    let m = rig.proxy.metrics().await.unwrap();
    for needle in [
        r#"tollgate_mcp_tool_calls_total{key_id="mcp-reader",team="readers",server="alpha",tool="read_file",outcome="ok"} 1"#,
        r#"tollgate_mcp_tool_calls_total{key_id="mcp-reader",team="readers",server="beta",tool="add",outcome="ok"} 1"#,
        r#"tollgate_mcp_tool_calls_total{key_id="mcp-reader",team="readers",server="alpha",tool="delete_file",outcome="denied"} 1"#,
        r#"tollgate_mcp_tool_calls_total{key_id="mcp-reader",team="readers",server="beta",tool="reverse",outcome="denied"} 1"#,
        r#"tollgate_mcp_tool_calls_total{key_id="mcp-reader",team="readers",server="",tool="",outcome="unknown"} 1"#,
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    let logs = rig.proxy.logs();
    assert!(logs.contains(r#""message":"mcp tool call""#), "{logs}");
    for secret in [KEY_READER, ALPHA_TOKEN, BETA_TOKEN] {
        assert!(!logs.contains(secret), "secret in logs");
    }

    // The auto mode of the 2.x SDK probes server/discover first and falls back to initialize.
    let r = rig.clone();
    let report = blocking(move || client(&r, KEY_READER, &json!([{"op": "list"}]), "auto")).await;
    assert_eq!(
        report["steps"][0]["tools"].as_array().map(Vec::len),
        Some(5),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_dies_mid_session_degrades_to_the_others() {
    let rig = std::sync::Arc::new(rig().await);
    let flag = rig.dir.path().join("beta-killed");
    let restarted = rig.dir.path().join("beta-restarted");
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "beta__echo", "args": {"text": "before"}},
        {"op": "wait_for", "path": flag},
        {"op": "list"},
        {"op": "call", "name": "beta__echo", "args": {"text": "after"}},
        {"op": "call", "name": "alpha__read_file", "args": {"path": "/x"}},
        {"op": "wait_for", "path": restarted},
        {"op": "call", "name": "beta__echo", "args": {"text": "again"}},
    ]);
    let r = rig.clone();
    let started = Instant::now();
    let run = tokio::task::spawn_blocking(move || client(&r, KEY_READER, &steps, "legacy"));
    // Once the client has used beta in this session, kill beta.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rig.beta.seen().contains("call echo") {
        assert!(Instant::now() < deadline, "the client never called beta");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.beta.kill();
    std::fs::write(&flag, "").unwrap();
    // Back on the same port, beta no longer knows the gateway's upstream session (404): the
    // gateway initializes a new one and the session goes on.
    while !rig.alpha.seen().contains("call read_file") {
        assert!(Instant::now() < deadline, "the client never got to alpha");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let port: u16 = rig
        .beta
        .url
        .trim_end_matches("/mcp")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let _beta2 = McpUpstream::start_on(port, "beta", BETA_TOKEN, 2, rig.dir.path());
    std::fs::write(&restarted, "").unwrap();
    let report = run.await.unwrap();
    let s = &report["steps"];
    assert_eq!(s[1]["text"], "beta echo: before", "{report}");
    let after: Vec<&str> = s[3]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(after, ["alpha__read_file", "alpha__list_dir"], "{report}");
    assert_eq!(
        s[3]["meta"]["tollgate/unavailable"][0]["server"], "beta",
        "{report}"
    );
    let msg = s[4]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("\"beta\" is unavailable"),
        "the error names the server: {report}"
    );
    assert_eq!(s[5]["text"], "CONTENT of /x from alpha", "{report}");
    assert_eq!(s[7]["text"], "beta echo: again", "{report}");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "degraded without hanging"
    );
    let m = rig.proxy.metrics().await.unwrap();
    assert!(
        m.contains(r#"server="beta",tool="echo",outcome="unavailable"} 1"#),
        "{m}"
    );
}

/// One JSON-RPC POST to the gateway's `/mcp`.
async fn rpc(rig: &Rig, headers: &[(&str, &str)], body: Value) -> tollgate_tests::harness::Reply {
    let mut h = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    h.extend_from_slice(headers);
    send(
        "POST",
        &format!("{}/mcp", rig.proxy.base_url()),
        &h,
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap()
}

fn init(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
           "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

fn req(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_auth_and_protocol_edges() {
    let rig = rig().await;
    let reader = format!("Bearer {KEY_READER}");
    let alice = format!("Bearer {KEY_ALICE}");

    // Keys: JSON-RPC error bodies; 401 for none or unknown, 403 for a disabled key.
    let r = rpc(&rig, &[], init("2025-11-25")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], -32001);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no virtual key")
    );
    assert!(r.headers.contains_key("www-authenticate"));
    let r = rpc(&rig, &[("authorization", "Bearer nope")], init("2025-11-25")).await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid virtual key")
    );
    let off = format!("Bearer {}", tollgate_tests::policy::KEY_OFF);
    assert_eq!(
        rpc(&rig, &[("authorization", &off)], init("2025-11-25"))
            .await
            .status,
        403
    );

    // initialize negotiates the revision and issues a session id.
    let r = rpc(&rig, &[("x-api-key", KEY_READER)], init("2025-06-18")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(r.json()["result"]["capabilities"]["tools"]["listChanged"], true);
    let sid = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let r = rpc(&rig, &[("authorization", &reader)], init("1999-01-01")).await;
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-11-25");

    let with = |auth: &str, sid: &str| -> Vec<(String, String)> {
        vec![
            ("authorization".into(), auth.to_owned()),
            ("mcp-session-id".into(), sid.to_owned()),
            ("mcp-protocol-version".into(), "2025-06-18".into()),
        ]
    };
    async fn call(rig: &Rig, h: &[(String, String)], body: Value) -> tollgate_tests::harness::Reply {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        rpc(rig, &h, body).await
    }
    let notif = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(call(&rig, &with(&reader, &sid), notif).await.status, 202);
    // A tool name longer than any server could have is clipped wherever it is written (a 3 MB
    // name once made 6 MB spans and MB-long log lines) and not echoed whole.
    let long = "t".repeat(300_000);
    let r = call(
        &rig,
        &with(&reader, &sid),
        req(90, "tools/call", json!({"name": long, "arguments": {}})),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602, "{:?}", r.json());
    assert!(r.body.len() < 1_000, "the name is not echoed");
    assert!(
        !rig.proxy.logs().contains(&"t".repeat(1_000)),
        "the name is not logged"
    );
    let r = call(&rig, &with(&reader, &sid), req(1, "ping", json!({}))).await;
    assert_eq!(r.json()["result"], json!({}));
    let r = call(&rig, &with(&reader, &sid), req(2, "tools/list", json!({}))).await;
    assert_eq!(
        r.json()["result"]["tools"].as_array().unwrap().len(),
        4,
        "first page: {:?}",
        r.json()
    );
    assert!(r.json()["result"]["nextCursor"].is_string());
    let r = call(
        &rig,
        &with(&reader, &sid),
        req(3, "tools/list", json!({"cursor": "bogus"})),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602);
    let r = call(&rig, &with(&reader, &sid), req(4, "no/such", json!({}))).await;
    assert_eq!(r.json()["error"]["code"], -32601);

    // Sessions: required, bound to their key, ended by DELETE.
    let r = rpc(
        &rig,
        &[("authorization", &reader)],
        req(5, "tools/list", json!({})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        call(&rig, &with(&reader, "0123"), req(6, "tools/list", json!({})))
            .await
            .status,
        404
    );
    assert_eq!(
        call(&rig, &with(&alice, &sid), req(7, "tools/list", json!({})))
            .await
            .status,
        404
    );
    let mut bad = with(&reader, &sid);
    bad[2].1 = "2020-01-01".into();
    assert_eq!(call(&rig, &bad, req(8, "ping", json!({}))).await.status, 400);
    let batch = json!([req(9, "ping", json!({}))]);
    assert_eq!(call(&rig, &with(&reader, &sid), batch).await.status, 400);
    let mut evil = with(&reader, &sid);
    evil.push(("origin".into(), "https://evil.example".into()));
    assert_eq!(call(&rig, &evil, req(10, "ping", json!({}))).await.status, 403);

    // A key without grants sees no server at all (default deny), and cannot call.
    let r = rpc(&rig, &[("authorization", &alice)], init("2025-11-25")).await;
    let asid = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let r = call(&rig, &with(&alice, &asid), req(1, "tools/list", json!({}))).await;
    assert_eq!(r.json()["result"]["tools"], json!([]));
    let r = call(
        &rig,
        &with(&alice, &asid),
        req(
            2,
            "tools/call",
            json!({"name": "alpha__read_file", "arguments": {"path": "/x"}}),
        ),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602);
    assert!(!rig.alpha.seen().contains("call read_file"));

    // The stateless (2026-07-28) style: no session, the version in the header.
    let r = rpc(
        &rig,
        &[("authorization", &reader), ("mcp-protocol-version", "2026-07-28")],
        req(
            1,
            "tools/call",
            json!({"name": "beta__shout", "arguments": {"text": "hey"}}),
        ),
    )
    .await;
    assert_eq!(r.json()["result"]["content"][0]["text"], "HEY", "{:?}", r.json());

    // The listen stream, and list_changed when a policy reload changes what the key may use.
    let url = format!("{}/anthropic/mcp", rig.proxy.base_url());
    let h = with(&reader, &sid);
    let mut h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    h.push(("accept", "text/event-stream"));
    let no_session: Vec<(&str, &str)> = vec![("authorization", &reader), ("accept", "text/event-stream")];
    let r = send("GET", &url, &no_session, Bytes::new()).await.unwrap();
    assert_eq!(r.status, 400);
    let resp = tollgate_tests::harness::open("GET", &url, &h, Bytes::new())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let shard = rig.dir.path().join("policy/b-mcp.yaml");
    let text = std::fs::read_to_string(&shard).unwrap();
    tollgate_tests::policy::write_atomically(&shard, &text.replace("\"list_*\"", "\"nothing\"")).unwrap();
    let mut body = resp.into_body();
    let got = tokio::time::timeout(Duration::from_secs(15), async {
        use http_body_util::BodyExt;
        let mut seen = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                seen.push_str(&String::from_utf8_lossy(d));
                if seen.contains("notifications/tools/list_changed") {
                    return seen;
                }
            }
        }
        seen
    })
    .await
    .expect("list_changed within 15 s of a policy change");
    assert!(got.contains("notifications/tools/list_changed"), "{got}");
    let r = call(&rig, &with(&reader, &sid), req(11, "tools/list", json!({}))).await;
    let listed = r.json();
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"alpha__read_file") && !names.contains(&"alpha__list_dir"),
        "{names:?}"
    );

    // DELETE ends the session.
    let h = with(&reader, &sid);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = send(
        "DELETE",
        &format!("{}/mcp", rig.proxy.base_url()),
        &h,
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        call(&rig, &with(&reader, &sid), req(12, "ping", json!({})))
            .await
            .status,
        404
    );
}

/// Byte offsets of each element of the top-level `tools` array, by name.
fn tool_slices(body: &[u8]) -> (usize, usize, Vec<(String, Vec<u8>)>) {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        tools: &'a serde_json::value::RawValue,
    }
    let top: Top<'_> = serde_json::from_slice(body).unwrap();
    let start = top.tools.get().as_ptr() as usize - body.as_ptr() as usize;
    let end = start + top.tools.get().len();
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(top.tools.get()).unwrap();
    let named = items
        .iter()
        .map(|t| {
            let v: Value = serde_json::from_str(t.get()).unwrap();
            (
                v["name"].as_str().unwrap().to_owned(),
                t.get().as_bytes().to_vec(),
            )
        })
        .collect();
    (start, end, named)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_tools_are_removed_and_the_rest_reach_the_provider_byte_identical() {
    let rig = rig().await;
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/messages-request-claude-code.json"
    );
    let original = std::fs::read(fixture).unwrap();
    let url = format!("{}/anthropic/v1/messages?beta=true", rig.proxy.base_url());
    let auth = format!("Bearer {KEY_READER}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    let r = send("POST", &url, &headers, Bytes::from(original.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sent = rig
        .fake
        .requests()
        .into_iter()
        .find(|q| q.path == "/v1/messages")
        .unwrap();
    let (os, oe, orig_tools) = tool_slices(&original);
    let (us, ue, up_tools) = tool_slices(&sent.body);
    let expected: Vec<&(String, Vec<u8>)> = orig_tools
        .iter()
        .filter(|(n, _)| !["Write", "Edit", "Bash"].contains(&n.as_str()))
        .collect();
    assert_eq!(orig_tools.len(), 24);
    assert_eq!(up_tools.len(), 21);
    for (want, got) in expected.iter().zip(&up_tools) {
        assert_eq!(want.0, got.0);
        assert!(want.1 == got.1, "tool {} changed on the way", want.0);
    }
    assert_eq!(&original[..os], &sent.body[..us], "bytes before tools unchanged");
    assert_eq!(&original[oe..], &sent.body[ue..], "bytes after tools unchanged");

    // A key without a tool policy forwards the body untouched.
    let auth = format!("Bearer {KEY_ALICE}");
    rig.fake.clear();
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    send("POST", &url, &headers, Bytes::from(original.clone()))
        .await
        .unwrap();
    let sent = rig
        .fake
        .requests()
        .into_iter()
        .find(|q| q.path == "/v1/messages")
        .unwrap();
    assert!(sent.body == original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_calling_a_removed_tool_is_refused() {
    let rig = rig().await;
    let url = format!("{}/v1/messages", rig.proxy.base_url());
    let auth = format!("Bearer {KEY_READER}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    let body = |stream: bool, tool: &str| {
        Bytes::from(
            json!({
                "model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
                "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": format!("[[tool_use:{tool}:{{\"command\":\"ls\"}}]]")}],
            })
            .to_string(),
        )
    };
    // Streamed: the stream ends with an error event in place of the tool_use block.
    let r = send("POST", &url, &headers, body(true, "Bash")).await.unwrap();
    let text = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 200, "{text}");
    assert!(text.contains("event: message_start"), "{text}");
    assert!(!text.contains("tool_use"), "{text}");
    assert!(
        text.contains("event: error") && text.contains("permission_error") && text.contains("'Bash'"),
        "{text}"
    );
    // JSON: a 403.
    let r = send("POST", &url, &headers, body(false, "Bash")).await.unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["type"], "permission_error");
    // A permitted tool passes, streamed and not.
    let r = send("POST", &url, &headers, body(true, "Read")).await.unwrap();
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("\"name\":\"Read\"") && text.contains("message_stop"),
        "{text}"
    );
    let r = send("POST", &url, &headers, body(false, "Read")).await.unwrap();
    assert_eq!(r.json()["content"][0]["name"], "Read");
    // tool_choice naming a removed tool: 400 before anything goes upstream.
    rig.fake.clear();
    let forced = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "tools": [{"name": "Bash"}],
                        "tool_choice": {"type": "tool", "name": "Bash"},
                        "messages": [{"role": "user", "content": "hi"}]});
    let r = send("POST", &url, &headers, Bytes::from(forced.to_string()))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(rig.fake.requests().iter().all(|q| q.path != "/v1/messages"));
}

/// Runs Claude Code headless (as `tests/claude_code.rs` does) with `--mcp-config` naming the
/// gateway's `/mcp` as server `gw`, authenticated with the same virtual key.
fn run_claude(rig: &Rig, key: &str, prompt: &str, allowed: &str) -> (Value, String) {
    let claude = e2e_dir().join("node_modules/.bin/claude");
    assert!(
        claude.exists(),
        "Claude Code is not installed: run `npm ci --prefix e2e` (make test does)"
    );
    let project = tempfile::tempdir().unwrap();
    let config = project.path().join("mcp.json");
    let mcp = json!({"mcpServers": {"gw": {
        "type": "http",
        "url": format!("{}/mcp", rig.proxy.base_url()),
        "headers": {"Authorization": format!("Bearer {key}")},
    }}});
    std::fs::write(&config, mcp.to_string()).unwrap();
    let base = format!("{}/anthropic", rig.proxy.base_url());
    let config = config.display().to_string();
    let run = tollgate_tests::claude::run_claude(
        &claude,
        &["-p", prompt, "--allowedTools", allowed, "--mcp-config", &config],
        &[
            // Tool search would defer every tool behind `ToolSearch`; off, the tools array
            // holds all of them, so the test sees what the model is offered.
            ("ENABLE_TOOL_SEARCH", "false"),
            ("ANTHROPIC_BASE_URL", &base),
            ("ANTHROPIC_AUTH_TOKEN", key),
        ],
        Some(project.path()),
    );
    let output = run.output();
    (run.json, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_sees_exactly_the_permitted_mcp_tools_and_calls_one() {
    let rig = std::sync::Arc::new(rig().await);
    let r = rig.clone();
    let (run, out) = blocking(move || {
        run_claude(
            &r,
            KEY_READER,
            r#"[[tool_use:mcp__gw__beta__shout:{"text":"hello through tollgate"}]]"#,
            "mcp__gw__beta__shout",
        )
    })
    .await;
    assert_eq!(run["is_error"], false, "{out}\nproxy logs:\n{}", rig.proxy.logs());
    assert!(
        run["result"]
            .as_str()
            .unwrap_or_default()
            .contains("Tool said: HELLO THROUGH TOLLGATE"),
        "the upstream's result came back to the model: {out}"
    );
    let calls: Vec<_> = rig
        .fake
        .requests()
        .into_iter()
        .filter(|q| q.path == "/v1/messages")
        .collect();
    let first = calls
        .iter()
        .find_map(|c| c.body_json().filter(|b| b["tools"].is_array()))
        .expect("a model call with tools");
    let names: Vec<String> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    let mut mcp: Vec<&str> = names
        .iter()
        .filter(|n| n.starts_with("mcp__"))
        .map(String::as_str)
        .collect();
    mcp.sort_unstable();
    let mut want: Vec<String> = PERMITTED.iter().map(|t| format!("mcp__gw__{t}")).collect();
    want.sort();
    assert_eq!(
        mcp, want,
        "the model sees exactly the permitted MCP tools: {names:?}"
    );
    for removed in ["Bash", "Write", "Edit"] {
        assert!(
            !names.iter().any(|n| n == removed),
            "{removed} reached the model: {names:?}"
        );
    }
    assert!(names.iter().any(|n| n == "Read"), "{names:?}");
    assert!(rig.beta.seen().contains("call shout"));
    let m = rig.proxy.metrics().await.unwrap();
    assert!(
        m.contains(r#"tollgate_mcp_tool_calls_total{key_id="mcp-reader",team="readers",server="beta",tool="shout",outcome="ok"} 1"#),
        "{m}"
    );
}
