//! Request building and response conversion of the Bedrock provider.

use std::collections::HashSet;

use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::credentials::AwsCredentials;
use super::credentials::tests::FakeReader;
use super::*;

const MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

fn bedrock(auth: AwsAuth) -> Bedrock {
    Bedrock::new(
        BedrockConfig {
            region: "us-east-1".into(),
            endpoint: None,
            auth,
        },
        FakeReader::with_env(&[]),
    )
}

fn static_auth(token: Option<&str>) -> AwsAuth {
    AwsAuth::Static {
        access_key_id: Secret::new("AKIDEXAMPLE"),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: token.map(Secret::new),
    }
}

fn client_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", "vk-client-secret".parse().unwrap());
    h.insert("authorization", "Bearer vk-client-secret".parse().unwrap());
    h.insert("x-claude-code-session-id", "s1".parse().unwrap());
    h.insert("anthropic-version", "2023-06-01".parse().unwrap());
    h.append(
        "anthropic-beta",
        "claude-code-20250219, interleaved-thinking-2025-05-14"
            .parse()
            .unwrap(),
    );
    h.append(
        "anthropic-beta",
        "interleaved-thinking-2025-05-14,context-1m-2025-08-07"
            .parse()
            .unwrap(),
    );
    h
}

async fn req(b: &Bedrock, op: Operation, body: &str) -> Request<Full<Bytes>> {
    let client = crate::upstream::build_client().unwrap();
    b.request(
        &client,
        op,
        MODEL,
        &client_headers(),
        &Bytes::from(body.to_owned()),
    )
    .await
    .unwrap()
}

async fn body_of(r: Request<Full<Bytes>>) -> Bytes {
    r.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn invoke_request_has_the_path_body_and_only_the_headers_bedrock_needs() {
    let b = bedrock(static_auth(None));
    let r = req(
        &b,
        Operation::Messages { stream: false },
        r#"{"model":"m","max_tokens":5,"stream":false,"service_tier":"auto","metadata":{"user_id":"u"},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(
        r.uri(),
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );
    let names: HashSet<&str> = r.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        HashSet::from([
            "content-type",
            "accept",
            "host",
            "content-length",
            "x-amz-date",
            "authorization"
        ])
    );
    assert_eq!(r.headers()["accept"], "application/json");
    assert_eq!(r.headers()["host"], "bedrock-runtime.us-east-1.amazonaws.com");
    let auth = r.headers()["authorization"].to_str().unwrap().to_owned();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
    assert!(
        auth.contains("/us-east-1/bedrock/aws4_request, SignedHeaders=accept;content-type;host;x-amz-date, ")
    );
    assert!(r.headers()["authorization"].is_sensitive());
    let len: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let body = body_of(r).await;
    assert_eq!(len, body.len());
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"max_tokens":5,"metadata":{"user_id":"u"},"messages":[{"role":"user","content":"hi"}],"anthropic_beta":["claude-code-20250219","interleaved-thinking-2025-05-14","context-1m-2025-08-07"],"anthropic_version":"bedrock-2023-05-31"}"#
    );
}

#[tokio::test]
async fn streaming_request_and_an_explicit_version_and_no_betas() {
    let b = bedrock(AwsAuth::ApiKey(Secret::new("bedrock-api-key")));
    let client = crate::upstream::build_client().unwrap();
    let r = b
        .request(
            &client,
            Operation::Messages { stream: true },
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x-v1:0",
            &HeaderMap::new(),
            &Bytes::from_static(
                br#"{"stream":true,"anthropic_version":"bedrock-2023-05-31","max_tokens":1}"#,
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        r.uri().path(),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-x-v1%3A0/invoke-with-response-stream"
    );
    assert_eq!(r.headers()["accept"], "application/vnd.amazon.eventstream");
    assert_eq!(r.headers()["authorization"], "Bearer bedrock-api-key");
    assert!(r.headers().get("x-amz-date").is_none());
    assert_eq!(
        &body_of(r).await[..],
        br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":1}"#
    );
}

#[test]
fn the_signature_matches_botocore_for_a_fixed_time() {
    // Expected value computed with botocore 1.44.8 (SigV4Auth, service bedrock) for the same
    // request, credentials and time.
    let b = bedrock(static_auth(Some("SESSIONTOKEN")));
    let creds = Resolved::SigV4(AwsCredentials {
        access_key_id: Secret::new("AKIDEXAMPLE"),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: Some(Secret::new("SESSIONTOKEN")),
        expires: None,
    });
    let body = br#"{"max_tokens":5,"messages":[{"role":"user","content":"hi"}],"anthropic_version":"bedrock-2023-05-31"}"#;
    let r = b
        .sign(
            &format!("/model/{}/invoke", encode_label(MODEL)),
            "application/json",
            Bytes::from_static(body),
            &creds,
            "20250101T000000Z",
        )
        .unwrap();
    assert_eq!(r.headers()["x-amz-security-token"], "SESSIONTOKEN");
    assert_eq!(
        r.headers()["authorization"],
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, \
         SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, \
         Signature=02f8e2059a4e3520127f3ff7536985e6b9abffd418f83da1016885b2df3bc071"
    );
}

#[tokio::test]
async fn count_tokens_uses_the_base_model_and_a_base64_invoke_body() {
    let b = bedrock(static_auth(None));
    let r = req(
        &b,
        Operation::CountTokens,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"thinking":{"type":"enabled","budget_tokens":1024}}"#,
    )
    .await;
    assert_eq!(
        r.uri().path(),
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );
    let v: Value = serde_json::from_slice(&body_of(r).await).unwrap();
    let inner = base64::engine::general_purpose::STANDARD
        .decode(v["input"]["invokeModel"]["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&inner).unwrap(),
        r#"{"messages":[{"role":"user","content":"hi"}],"thinking":{"type":"enabled","budget_tokens":1024},"anthropic_beta":["claude-code-20250219","interleaved-thinking-2025-05-14","context-1m-2025-08-07"],"anthropic_version":"bedrock-2023-05-31","max_tokens":1025}"#
    );
}

#[test]
fn count_tokens_model_ids() {
    for (given, want) in [
        (MODEL, "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("eu.anthropic.claude-x-v1:0", "anthropic.claude-x-v1:0"),
        ("global.anthropic.claude-x-v1:0", "anthropic.claude-x-v1:0"),
        ("us-gov.anthropic.claude-x-v1:0", "anthropic.claude-x-v1:0"),
        ("anthropic.claude-x-v1:0", "anthropic.claude-x-v1:0"),
        (
            "arn:aws:bedrock:us-east-1:1:inference-profile/apac.anthropic.claude-x-v1:0",
            "anthropic.claude-x-v1:0",
        ),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-x-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-x-v1:0",
        ),
    ] {
        assert_eq!(count_tokens_model(given), want, "{given}");
    }
}

#[tokio::test]
async fn request_errors_say_why_without_secrets() {
    let b = bedrock(static_auth(None));
    let client = crate::upstream::build_client().unwrap();
    let err = b
        .request(
            &client,
            Operation::Messages { stream: false },
            MODEL,
            &HeaderMap::new(),
            &Bytes::from_static(b"[1]"),
        )
        .await
        .unwrap_err();
    assert!(err.contains("not a JSON object"), "{err}");
    let b = bedrock(AwsAuth::Environment);
    let err = b
        .request(
            &client,
            Operation::Messages { stream: false },
            MODEL,
            &HeaderMap::new(),
            &Bytes::from_static(b"{}"),
        )
        .await
        .unwrap_err();
    assert!(err.starts_with("no AWS credentials"), "{err}");
    // A custom endpoint with a port is the Host header; a base path is kept.
    let b = Bedrock::new(
        BedrockConfig {
            region: "eu-west-1".into(),
            endpoint: Some("http://127.0.0.1:4566/bedrock/".into()),
            auth: static_auth(None),
        },
        FakeReader::with_env(&[]),
    );
    let r = b
        .request(
            &client,
            Operation::Messages { stream: false },
            "m",
            &HeaderMap::new(),
            &Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    assert_eq!(r.uri(), "http://127.0.0.1:4566/bedrock/model/m/invoke");
    assert_eq!(r.headers()["host"], "127.0.0.1:4566");
    assert!(
        r.headers()["authorization"]
            .to_str()
            .unwrap()
            .contains("/eu-west-1/bedrock/")
    );
}

fn upstream(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut()
            .append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

async fn answer(
    op: Operation,
    resp: Response<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Result<Bytes, String>) {
    let b = bedrock(static_auth(None));
    let out = b.response(op, resp, Duration::from_secs(5));
    let (parts, body) = out.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn json_passes_unchanged_and_count_tokens_is_converted() {
    let json = br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":1}}"#;
    let (status, headers, body) = answer(
        Operation::Messages { stream: false },
        upstream(
            200,
            &[("content-type", "application/json"), ("x-amzn-requestid", "r1")],
            json,
        ),
    )
    .await;
    assert_eq!((status, &body.unwrap()[..]), (StatusCode::OK, &json[..]));
    assert_eq!(headers["x-amzn-requestid"], "r1");

    let (status, headers, body) = answer(
        Operation::CountTokens,
        upstream(
            200,
            &[("content-type", "application/json"), ("content-length", "17")],
            br#"{"inputTokens":42}"#,
        ),
    )
    .await;
    assert_eq!(
        (status, &body.unwrap()[..]),
        (StatusCode::OK, &br#"{"input_tokens":42}"#[..])
    );
    assert!(headers.get("content-length").is_none());
    let (_, _, body) = answer(Operation::CountTokens, upstream(200, &[], b"nope")).await;
    assert!(body.unwrap_err().contains("count-tokens answer is unreadable"));
}

#[tokio::test]
async fn an_event_stream_becomes_sse() {
    use super::eventstream::{HeaderValue as H, encode};
    let event = r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":1}}"#;
    let payload = json!({ "bytes": base64::engine::general_purpose::STANDARD.encode(event) }).to_string();
    let frame = encode(
        &[
            (":message-type", H::String("event".into())),
            (":event-type", H::String("chunk".into())),
        ],
        payload.as_bytes(),
    );
    let frame: &'static [u8] = Box::leak(frame.into_boxed_slice());
    let (status, headers, body) = answer(
        Operation::Messages { stream: true },
        upstream(
            200,
            &[
                ("content-type", "application/vnd.amazon.eventstream"),
                ("content-length", "999"),
                ("x-amzn-bedrock-content-type", "application/json"),
            ],
            frame,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(headers.get("content-length").is_none());
    assert_eq!(
        std::str::from_utf8(&body.unwrap()).unwrap(),
        format!("event: message_stop\ndata: {event}\n\n")
    );
}

async fn error_case(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> (u16, HeaderMap, Value) {
    let (s, h, b) = answer(
        Operation::Messages { stream: false },
        upstream(status, headers, body),
    )
    .await;
    (s.as_u16(), h, serde_json::from_slice(&b.unwrap()).unwrap())
}

#[tokio::test]
async fn errors_are_mapped_with_message_request_id_and_retry_after() {
    let (s, h, v) = error_case(
        429,
        &[
            (
                "x-amzn-ErrorType",
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            ),
            ("x-amzn-RequestId", "req-9"),
            ("retry-after", "7"),
        ],
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "7");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        v,
        json!({"type":"error","error":{"type":"rate_limit_error","message":"Too many requests, please wait before trying again."},"request_id":"req-9"})
    );

    let (s, _, v) = error_case(
        400,
        &[("x-amzn-ErrorType", "ValidationException")],
        br#"{"message":"prompt is too long: 250000 tokens > 200000 maximum"}"#,
    )
    .await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    assert_eq!(
        v["error"]["message"],
        "prompt is too long: 250000 tokens > 200000 maximum"
    );

    let (s, _, v) = error_case(
        403,
        &[(
            "x-amzn-ErrorType",
            "InvalidSignatureException:http://internal.amazon.com/coral/",
        )],
        br#"{"message":"The request signature we calculated does not match the signature you provided."}"#,
    )
    .await;
    assert_eq!((s, v["error"]["type"].as_str()), (502, Some("api_error")));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(errors::CREDENTIALS_REFUSED)
    );

    // No header: the status decides, the body's __type refines within it.
    let (s, _, v) = error_case(
        503,
        &[],
        br#"{"__type":"com.amazon.bedrock#ServiceUnavailableException","Message":"busy"}"#,
    )
    .await;
    assert_eq!(
        (s, v["error"]["type"].as_str(), v["error"]["message"].as_str()),
        (529, Some("overloaded_error"), Some("busy"))
    );
    let (s, _, v) = error_case(403, &[], b"<html>Forbidden</html>").await;
    assert_eq!((s, v["error"]["type"].as_str()), (502, Some("api_error")));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("<html>Forbidden</html>")
    );
}
