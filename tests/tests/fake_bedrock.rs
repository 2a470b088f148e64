//! The fake Bedrock checked against the real boto3 client (`e2e/fakes/bedrock_selftest.py`):
//! it accepts botocore's signatures and temporary credentials, boto3 parses its event streams,
//! and it refuses a wrong secret.

use std::process::Command;

use serde_json::Value;
use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig};
use tollgate_tests::fake_bedrock::{FakeBedrock, FakeBedrockOptions};
use tollgate_tests::mcp::{e2e_dir, python};

const UPSTREAM_KEY: &str = "sk-ant-bedrock-upstream";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_talks_to_the_fake_bedrock() {
    let anthropic = FakeAnthropic::start(FakeConfig::new(UPSTREAM_KEY)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("web-identity-token");
    std::fs::write(&token_file, "eyJ.web-identity.token\n").unwrap();
    let mut options = FakeBedrockOptions::new(anthropic.base_url(), UPSTREAM_KEY);
    options.web_identity_token_file = Some(token_file);
    options.container_token = Some("pod-identity-token".into());
    let bedrock = FakeBedrock::start(options.clone());

    let endpoint = bedrock.base_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(e2e_dir().join("fakes/bedrock_selftest.py"))
            .args(["--endpoint", &endpoint, "--region", &options.region])
            .args(["--access-key-id", &options.access_key_id])
            .args(["--secret-access-key", &options.secret_access_key])
            .args(["--web-identity-token", "eyJ.web-identity.token"])
            .args(["--container-token", "pod-identity-token"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "self-test failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["failures"], Value::Array(vec![]));

    let records = bedrock.records();
    let model_calls: Vec<&Value> = records.iter().filter(|r| r.get("model").is_some()).collect();
    let verified = |action: &str| {
        model_calls.iter().any(|r| {
            r["action"] == action && r["auth"] == "sigv4" && r["signature_ok"] == true && r["status"] == 200
        })
    };
    assert!(verified("invoke"), "{records:#?}");
    assert!(verified("invoke-with-response-stream"));
    assert!(verified("count-tokens"));
    let invoke = model_calls
        .iter()
        .find(|r| r["action"] == "invoke" && r["status"] == 200)
        .unwrap();
    assert_eq!(invoke["model"], "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
    assert_eq!(invoke["upstream_body"]["model"], invoke["model"]);
    assert!(invoke["upstream_body"].get("anthropic_version").is_none());
    // The wrong secret was seen and refused after a real signature check.
    assert!(
        model_calls
            .iter()
            .any(|r| r["error"] == "InvalidSignatureException" && r["signature_ok"] == false)
    );
    assert!(
        records
            .iter()
            .any(|r| r["auth"] == "sts" && r["signature_ok"] == true)
    );
    assert!(
        records
            .iter()
            .any(|r| r["auth"] == "container" && r["signature_ok"] == true)
    );
    // The upstream saw Anthropic requests with its key.
    assert!(
        anthropic
            .requests()
            .iter()
            .any(|r| r.path == "/v1/messages" && r.header("x-api-key") == Some(UPSTREAM_KEY))
    );
}

mod gateway_module {
    //! The gateway's Bedrock module against the fake: botocore accepts its signatures (static,
    //! web identity and container credentials, and the API key), and its answers come back in
    //! Anthropic format.

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::HeaderMap;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tollgate_dataplane::policy::CredentialReader;
    use tollgate_dataplane::providers::Operation;
    use tollgate_dataplane::providers::bedrock::{AwsAuth, Bedrock, BedrockConfig};
    use tollgate_dataplane::secret::Secret;
    use tollgate_dataplane::upstream::{HttpClient, build_client};
    use tollgate_tests::fake_anthropic::{FakeAnthropic, FakeConfig};
    use tollgate_tests::fake_bedrock::{FakeBedrock, FakeBedrockOptions};

    use super::UPSTREAM_KEY;

    const MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

    struct Env(HashMap<String, String>);

    impl CredentialReader for Env {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            std::fs::read_to_string(path)
        }
    }

    fn provider(fake: &FakeBedrock, auth: AwsAuth, env: &[(&str, &str)]) -> Bedrock {
        Bedrock::new(
            BedrockConfig {
                region: fake.options.region.clone(),
                endpoint: Some(fake.base_url()),
                auth,
            },
            Arc::new(Env(env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect())),
        )
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "vk-client".parse().unwrap());
        h.insert("x-claude-code-session-id", "sess-1".parse().unwrap());
        h.insert(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14".parse().unwrap(),
        );
        h
    }

    /// One call through the module: request, send, response; (status, body text).
    async fn call(b: &Bedrock, client: &HttpClient, op: Operation, body: Value) -> (u16, String, HeaderMap) {
        let req = b
            .request(
                client,
                op,
                MODEL,
                &client_headers(),
                &Bytes::from(body.to_string()),
            )
            .await
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let out = b.response(op, resp, Duration::from_secs(30));
        let status = out.status().as_u16();
        let headers = out.headers().clone();
        let bytes = out.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned(), headers)
    }

    fn messages(text: &str, stream: bool) -> Value {
        json!({"model": MODEL, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": text}]})
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_credential_kind_is_accepted_and_answers_are_anthropic() {
        let anthropic = FakeAnthropic::start(FakeConfig::new(UPSTREAM_KEY)).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "eyJ.irsa.token\n").unwrap();
        let container_token_file = dir.path().join("container-token");
        std::fs::write(&container_token_file, "pod-identity-token").unwrap();
        let mut options = FakeBedrockOptions::new(anthropic.base_url(), UPSTREAM_KEY);
        options.web_identity_token_file = Some(token_file.clone());
        options.container_token = Some("pod-identity-token".into());
        options.api_key = Some("bedrock-api-key-1".into());
        let fake = FakeBedrock::start(options.clone());
        let client = build_client().unwrap();
        let base = fake.base_url();

        let static_auth = AwsAuth::Static {
            access_key_id: Secret::new(&options.access_key_id),
            secret_access_key: Secret::new(&options.secret_access_key),
            session_token: None,
        };
        let sts = format!("{base}/sts/");
        let container = format!("{base}/container-credentials");
        let token_path = token_file.to_str().unwrap().to_owned();
        let kinds: Vec<(&str, Bedrock)> = vec![
            ("static", provider(&fake, static_auth, &[])),
            (
                "api key",
                provider(&fake, AwsAuth::ApiKey(Secret::new("bedrock-api-key-1")), &[]),
            ),
            (
                "web identity",
                provider(
                    &fake,
                    AwsAuth::WebIdentity {
                        role_arn: "arn:aws:iam::123456789012:role/tollgate".into(),
                        token_file: token_path.clone(),
                        session_name: None,
                        sts_endpoint: Some(sts.clone()),
                    },
                    &[],
                ),
            ),
            (
                "container",
                provider(
                    &fake,
                    AwsAuth::Container {
                        full_uri: container.clone(),
                        token_file: Some(container_token_file.to_str().unwrap().to_owned()),
                    },
                    &[],
                ),
            ),
            (
                "environment (web identity)",
                provider(
                    &fake,
                    AwsAuth::Environment,
                    &[
                        ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_path),
                        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/tollgate"),
                        ("AWS_ENDPOINT_URL_STS", &sts),
                    ],
                ),
            ),
        ];
        for (kind, b) in &kinds {
            let (status, body, _) = call(
                b,
                &client,
                Operation::Messages { stream: false },
                messages("hi", false),
            )
            .await;
            assert_eq!(status, 200, "{kind}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["content"][0]["text"], "Hello from fake-anthropic.", "{kind}");
        }
        // Temporary credentials are cached: one STS call per provider using it, one container call.
        let records = fake.records();
        assert_eq!(records.iter().filter(|r| r["auth"] == "sts").count(), 2);
        assert_eq!(records.iter().filter(|r| r["auth"] == "container").count(), 1);
        let b = &kinds[2].1;
        call(
            b,
            &client,
            Operation::Messages { stream: false },
            messages("again", false),
        )
        .await;
        assert_eq!(fake.records().iter().filter(|r| r["auth"] == "sts").count(), 2);

        // Every model call was verified; no client header reached AWS.
        for r in fake.records().iter().filter(|r| r.get("model").is_some()) {
            assert_eq!(r["signature_ok"], true, "{r}");
            let headers: Vec<&str> = r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            for leaked in ["x-api-key", "x-claude-code-session-id", "anthropic-beta"] {
                assert!(!headers.contains(&leaked), "{leaked} sent to AWS: {headers:?}");
            }
            assert_eq!(
                r["body"]["anthropic_beta"],
                json!(["interleaved-thinking-2025-05-14"])
            );
        }

        // A stream, transcoded to Anthropic SSE.
        let b = &kinds[0].1;
        let (status, sse, headers) = call(
            b,
            &client,
            Operation::Messages { stream: true },
            messages("hi", true),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/event-stream");
        let names: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{sse}");
        assert_eq!(names.last(), Some(&"message_stop"));
        assert!(sse.contains("\"text\":\"Hello"), "{sse}");
        assert!(sse.contains("amazon-bedrock-invocationMetrics"));

        // A mid-stream error becomes an SSE error event.
        let (_, sse, _) = call(
            b,
            &client,
            Operation::Messages { stream: true },
            messages("[[scenario:error-midstream]] hi", true),
        )
        .await;
        let last = sse.rsplit("event: ").next().unwrap_or("");
        assert!(
            last.starts_with("error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\""),
            "{sse}"
        );

        // Count tokens.
        let (status, body, _) = call(
            b,
            &client,
            Operation::CountTokens,
            json!({"model": MODEL, "messages": [{"role": "user", "content": "count me"}]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["input_tokens"].as_u64().unwrap() > 0, "{body}");

        // Upstream errors mapped twice (Anthropic -> Bedrock -> Anthropic).
        let (status, body, _) = call(
            b,
            &client,
            Operation::Messages { stream: false },
            messages("[[scenario:status-429]] x", false),
        )
        .await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("rate_limit_error"));
        let (status, body, _) = call(
            b,
            &client,
            Operation::Messages { stream: false },
            messages("[[scenario:status-400]] x", false),
        )
        .await;
        assert_eq!(status, 400);
        assert!(body.contains("prompt is too long"), "{body}");

        // Refused credentials are 502 for the client, never 401.
        let wrong = provider(
            &fake,
            AwsAuth::Static {
                access_key_id: Secret::new(&options.access_key_id),
                secret_access_key: Secret::new("wrong"),
                session_token: None,
            },
            &[],
        );
        let (status, body, _) = call(
            &wrong,
            &client,
            Operation::Messages { stream: false },
            messages("x", false),
        )
        .await;
        assert_eq!(status, 502, "{body}");
        assert!(
            body.contains("the gateway's AWS credentials were refused by Bedrock"),
            "{body}"
        );
    }
}
