//! Self-tests of the fake Vertex AI and Foundry (`e2e/fakes/gcp_azure.py`) over plain HTTP:
//! the fakes accept what the real services accept and refuse what they refuse, in their shapes.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tollgate_dataplane::providers::vertex::token::ServiceAccount;
use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig};
use tollgate_tests::fake_cloud::{FakeFoundry, FakeVertex, FoundryOptions, VertexOptions};

const KEY: &str = "sk-ant-upstream-test";
const MESSAGE: &str = r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":32,"messages":[{"role":"user","content":"hello"}]}"#;

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn upstream() -> FakeAnthropic {
    FakeAnthropic::start(FakeConfig::new(KEY)).await.unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Exchanges a JWT assertion signed by `sa` at the fake's token endpoint.
async fn token_with(fake: &FakeVertex, sa: &ServiceAccount) -> Reply {
    let assertion = sa.assertion(now()).unwrap();
    send(
        Method::POST,
        &format!("{}/token", fake.base_url()),
        &[("content-type", "application/x-www-form-urlencoded")],
        form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ]),
    )
    .await
}

fn service_account(fake: &FakeVertex) -> ServiceAccount {
    let json = std::fs::read_to_string(fake.sa_key_path()).unwrap();
    ServiceAccount::parse(&json, "fake key").unwrap()
}

async fn access_token(fake: &FakeVertex) -> String {
    let r = token_with(fake, &service_account(fake)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], fake.options.token_expires_in);
    v["access_token"].as_str().unwrap().to_owned()
}

fn model_url(fake: &FakeVertex, model: &str, method: &str) -> String {
    let o = &fake.options;
    format!(
        "{}/v1/projects/{}/locations/{}/publishers/anthropic/models/{model}:{method}",
        fake.base_url(),
        o.project,
        o.region
    )
}

async fn predict(
    fake: &FakeVertex,
    token: &str,
    model: &str,
    method: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    send(
        Method::POST,
        &model_url(fake, model, method),
        &headers,
        body.to_owned(),
    )
    .await
}

fn assert_google_error(r: &Reply, code: u16, status: &str) {
    assert_eq!(r.status, code, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["error"]["code"], code);
    assert_eq!(v["error"]["status"], status);
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn a_valid_jwt_gets_a_token_that_calls_claude_json_stream_and_count_tokens() {
    let anthropic = upstream().await;
    let fake = FakeVertex::start(&anthropic.base_url(), KEY, VertexOptions::default());
    let sa_json: Value = serde_json::from_str(&std::fs::read_to_string(fake.sa_key_path()).unwrap()).unwrap();
    assert_eq!(sa_json["type"], "service_account");
    assert_eq!(sa_json["token_uri"], format!("{}/token", fake.base_url()));
    let token = access_token(&fake).await;

    let r = predict(
        &fake,
        &token,
        "claude-sonnet-4-5@20250929",
        "rawPredict",
        MESSAGE,
        &[("anthropic-beta", "b1")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["type"], "message");

    let stream = MESSAGE.replacen('{', r#"{"stream":true,"#, 1);
    let r = predict(
        &fake,
        &token,
        "claude-sonnet-4-5@20250929",
        "streamRawPredict",
        &stream,
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("event: message_start") && text.contains("event: message_stop"),
        "{text}"
    );

    let count = r#"{"anthropic_version":"vertex-2023-10-16","model":"claude-sonnet-4-5@20250929","messages":[{"role":"user","content":"hello"}]}"#;
    let r = predict(&fake, &token, "count-tokens", "rawPredict", count, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["input_tokens"].as_u64().is_some());

    // The upstream saw Anthropic requests: model from the path, no anthropic_version member.
    let seen = anthropic.requests();
    assert_eq!(seen.len(), 3);
    let first = seen[0].body_json().unwrap();
    assert_eq!(first["model"], "claude-sonnet-4-5@20250929");
    assert!(first.get("anthropic_version").is_none());
    assert_eq!(seen[0].header("anthropic-beta"), Some("b1"));
    assert_eq!(seen[2].path, "/v1/messages/count_tokens");

    let kinds: Vec<String> = fake
        .records()
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["token", "vertex", "vertex", "vertex"]);
}

#[tokio::test]
async fn a_jwt_signed_by_another_key_is_refused() {
    let anthropic = upstream().await;
    let fake = FakeVertex::start(&anthropic.base_url(), KEY, VertexOptions::default());
    let mut key: Value = serde_json::from_str(&std::fs::read_to_string(fake.sa_key_path()).unwrap()).unwrap();
    let other = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dataplane/src/providers/vertex/testdata/test-sa-key.pem");
    key["private_key"] = Value::String(std::fs::read_to_string(other).unwrap());
    let impostor = ServiceAccount::parse(&key.to_string(), "impostor").unwrap();
    let r = token_with(&fake, &impostor).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(r.json()["error_description"], "Invalid JWT Signature.");

    // A wrong audience (another token_uri) is refused too.
    key["private_key"] = serde_json::from_str::<Value>(&std::fs::read_to_string(fake.sa_key_path()).unwrap())
        .unwrap()["private_key"]
        .clone();
    key["token_uri"] = Value::String("https://oauth2.googleapis.com/token".into());
    let elsewhere = ServiceAccount::parse(&key.to_string(), "elsewhere").unwrap();
    let r = token_with(&fake, &elsewhere).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn unknown_and_expired_tokens_are_refused_in_googles_shape() {
    let anthropic = upstream().await;
    let fake = FakeVertex::start(
        &anthropic.base_url(),
        KEY,
        VertexOptions {
            token_expires_in: 1,
            ..VertexOptions::default()
        },
    );
    let r = predict(&fake, "ya29.made-up", "claude-x@1", "rawPredict", MESSAGE, &[]).await;
    assert_google_error(&r, 401, "UNAUTHENTICATED");
    let token = access_token(&fake).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = predict(&fake, &token, "claude-x@1", "rawPredict", MESSAGE, &[]).await;
    assert_google_error(&r, 401, "UNAUTHENTICATED");
    assert!(anthropic.requests().is_empty());
}

#[tokio::test]
async fn bodies_vertex_refuses_are_refused_and_project_region_checked() {
    let anthropic = upstream().await;
    let fake = FakeVertex::start(&anthropic.base_url(), KEY, VertexOptions::default());
    let token = access_token(&fake).await;
    let with_model = MESSAGE.replacen('{', r#"{"model":"claude-x","#, 1);
    let r = predict(&fake, &token, "claude-x@1", "rawPredict", &with_model, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "model: Extra inputs are not permitted"
    );
    let no_version = r#"{"max_tokens":1,"messages":[]}"#;
    let r = predict(&fake, &token, "claude-x@1", "rawPredict", no_version, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let auth = format!("Bearer {token}");
    let wrong_project =
        model_url(&fake, "claude-x@1", "rawPredict").replace("/projects/tollgate-test/", "/projects/other/");
    let r = send(Method::POST, &wrong_project, &[("authorization", &auth)], MESSAGE).await;
    assert_google_error(&r, 403, "PERMISSION_DENIED");
    let wrong_region =
        model_url(&fake, "claude-x@1", "rawPredict").replace("/locations/us-east5/", "/locations/global/");
    let r = send(Method::POST, &wrong_region, &[("authorization", &auth)], MESSAGE).await;
    assert_google_error(&r, 404, "NOT_FOUND");
    assert!(anthropic.requests().is_empty());
}

#[tokio::test]
async fn upstream_429_and_529_become_google_errors() {
    let anthropic = upstream().await;
    let fake = FakeVertex::start(&anthropic.base_url(), KEY, VertexOptions::default());
    let token = access_token(&fake).await;
    let r = predict(
        &fake,
        &token,
        "claude-x@1",
        "rawPredict",
        MESSAGE,
        &[("x-fake-scenario", "status-429")],
    )
    .await;
    assert_google_error(&r, 429, "RESOURCE_EXHAUSTED");
    let r = predict(
        &fake,
        &token,
        "claude-x@1",
        "rawPredict",
        MESSAGE,
        &[("x-fake-scenario", "status-529")],
    )
    .await;
    assert_google_error(&r, 503, "UNAVAILABLE");
    // Other model errors pass in Anthropic's shape, as Vertex passes them.
    let r = predict(
        &fake,
        &token,
        "claude-x@1",
        "rawPredict",
        MESSAGE,
        &[("x-fake-scenario", "status-400")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
}

#[tokio::test]
async fn the_metadata_server_needs_its_flavor_header_and_its_tokens_work() {
    let anthropic = upstream().await;
    let fake = FakeVertex::start(&anthropic.base_url(), KEY, VertexOptions::default());
    let url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token",
        fake.base_url()
    );
    assert_eq!(send(Method::GET, &url, &[], Bytes::new()).await.status, 403);
    let r = send(Method::GET, &url, &[("metadata-flavor", "Google")], Bytes::new()).await;
    assert_eq!(r.status, 200);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = predict(&fake, &token, "claude-x@1", "rawPredict", MESSAGE, &[]).await;
    assert_eq!(r.status, 200);
}

async fn entra(fake: &FakeFoundry, tenant: &str, pairs: &[(&str, &str)]) -> Reply {
    send(
        Method::POST,
        &format!("{}/{tenant}/oauth2/v2.0/token", fake.base_url()),
        &[("content-type", "application/x-www-form-urlencoded")],
        form(pairs),
    )
    .await
}

async fn foundry_messages(fake: &FakeFoundry, auth: (&str, &str)) -> Reply {
    send(
        Method::POST,
        &format!("{}/v1/messages", fake.endpoint()),
        &[
            auth,
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ],
        r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await
}

#[tokio::test]
async fn foundry_accepts_its_key_and_entra_tokens_and_refuses_the_rest() {
    let anthropic = upstream().await;
    let fake = FakeFoundry::start(&anthropic.base_url(), KEY, FoundryOptions::default());
    let o = fake.options.clone();
    let scope = "https://ai.azure.com/.default";
    let client_id = o.client_id.as_str();

    // The resource key, in either header.
    let r = foundry_messages(&fake, ("api-key", "fake-foundry-key")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["type"], "message");
    assert_eq!(
        foundry_messages(&fake, ("x-api-key", "fake-foundry-key"))
            .await
            .status,
        200
    );
    let r = foundry_messages(&fake, ("api-key", "wrong")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "401");

    // Client secret and federated assertion grants.
    let secret = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
        ("client_secret", "fake-client-secret"),
    ];
    let r = entra(&fake, &o.tenant, &secret).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    assert_eq!(
        foundry_messages(&fake, ("authorization", &bearer)).await.status,
        200
    );
    let federated = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", "fake-federated-token"),
    ];
    assert_eq!(entra(&fake, &o.tenant, &federated).await.status, 200);

    // Refusals, in Entra's shape.
    let mut bad = secret;
    bad[3].1 = "wrong";
    let r = entra(&fake, &o.tenant, &bad).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    assert_eq!(entra(&fake, "other-tenant", &secret).await.status, 400);
    let mut wrong_scope = secret;
    wrong_scope[2].1 = "https://management.azure.com/.default";
    assert_eq!(
        entra(&fake, &o.tenant, &wrong_scope).await.json()["error"],
        "invalid_scope"
    );
    let r = foundry_messages(&fake, ("authorization", "Bearer made-up")).await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unauthorized")
    );

    // The upstream got Anthropic requests with its own key, none of the Azure credentials.
    let seen = anthropic.requests();
    assert_eq!(seen.len(), 3);
    for req in &seen {
        assert_eq!(req.header("x-api-key"), Some(KEY));
        assert!(req.header("authorization").is_none() && req.header("api-key").is_none());
        assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    }
}
