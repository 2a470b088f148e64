//! Amazon Bedrock (`bedrock-runtime` InvokeModel) as an Anthropic Messages upstream.
//!
//! **Request.** `POST /model/{modelId}/invoke` (JSON) or `/invoke-with-response-stream` (AWS
//! event stream); the model id is one path label, percent-encoded as the AWS SDKs do. The body
//! is the client's Messages body edited at the top level only (every other member keeps its
//! bytes, so prompt caching sees the prompt the client rendered): `model` and `stream` go (they
//! are in the path), `anthropic_version: bedrock-2023-05-31` is added when absent, the client's
//! `anthropic-beta` headers become `anthropic_beta`. Members Bedrock does not know are
//! forwarded, so that Bedrock's own `ValidationException` names them (a feature silently
//! dropped would be worse), except `service_tier`, a first-party capacity hint with no meaning
//! on Bedrock (capacity there is chosen by the inference profile). Count tokens uses Bedrock's
//! `CountTokens` on the base model id (it accepts foundation models only, not cross-region
//! inference profiles). Only the headers Bedrock needs are sent: nothing of the client's
//! (session ids, its virtual key) reaches AWS. Authentication: a Bedrock API key as `Bearer`,
//! or a SigV4 signature (service `bedrock`) with credentials from [`credentials`].
//!
//! **Response.** 2xx JSON passes unchanged; an event stream is transcoded to Anthropic SSE
//! ([`transcode`]); a count-tokens answer is converted; errors are mapped by one table
//! ([`errors`]).

pub mod credentials;
pub mod errors;
pub mod eventstream;
pub mod sigv4;
pub mod transcode;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use self::credentials::{CredentialProvider, Resolved};
use self::transcode::{Converted, Transcoder};
use super::Operation;
use super::body_edit::{BodyEdit, edit};
use crate::anthropic::error::error_body;
use crate::body::{BoxedBody, boxed};
use crate::secret::CredentialReader;
use crate::secret::Secret;
use crate::upstream::{HttpClient, response_headers};

/// The `anthropic_version` Bedrock requires.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// The SigV4 service name of `bedrock-runtime`.
pub const SIGNING_SERVICE: &str = "bedrock";
/// Body members removed before forwarding (see the module docs).
const REMOVED: &[&str] = &["model", "stream", "service_tier"];
/// Cross-region inference profile prefixes (`us.anthropic.claude-...`).
const GEO_PREFIXES: &[&str] = &["us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"];
/// Largest error or count-tokens answer read.
const MAX_SMALL_ANSWER: usize = 1 << 20;

/// Where and how to reach Bedrock.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// e.g. `us-east-1`.
    pub region: String,
    /// Base URL; `None` is `https://bedrock-runtime.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// How to authenticate.
    pub auth: AwsAuth,
}

/// How the gateway authenticates to Bedrock.
#[derive(Debug, Clone)]
pub enum AwsAuth {
    /// A Bedrock API key, sent as `Authorization: Bearer <key>`.
    ApiKey(Secret),
    /// Long-lived (or externally managed temporary) SigV4 credentials.
    Static {
        /// Access key id.
        access_key_id: Secret,
        /// Secret access key.
        secret_access_key: Secret,
        /// Session token of temporary credentials.
        session_token: Option<Secret>,
    },
    /// STS `AssumeRoleWithWebIdentity` with a projected token (EKS IRSA).
    WebIdentity {
        /// The role to assume.
        role_arn: String,
        /// The token file (re-read at every refresh).
        token_file: String,
        /// `RoleSessionName`; default `tollgate-<unix time>`.
        session_name: Option<String>,
        /// STS endpoint; default `AWS_ENDPOINT_URL_STS` or `https://sts.{region}.amazonaws.com`.
        sts_endpoint: Option<String>,
    },
    /// A container-credentials endpoint (EKS Pod Identity, ECS).
    Container {
        /// The endpoint.
        full_uri: String,
        /// File holding the `Authorization` token (re-read at every refresh).
        token_file: Option<String>,
    },
    /// The SDKs' environment chain, read at request time (see [`credentials`]).
    Environment,
}

/// The Bedrock provider: configuration and credential cache.
pub struct Bedrock {
    config: BedrockConfig,
    endpoint: String,
    credentials: CredentialProvider,
}

impl Bedrock {
    /// A provider for `config`, reading credential files and variables through `reader`.
    pub fn new(config: BedrockConfig, reader: Arc<dyn CredentialReader + Send + Sync>) -> Self {
        let endpoint = config
            .endpoint
            .as_deref()
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("https://bedrock-runtime.{}.amazonaws.com", config.region));
        let credentials = CredentialProvider::new(config.auth.clone(), &config.region, reader);
        Self {
            config,
            endpoint,
            credentials,
        }
    }

    /// The signed upstream request. `model` is the upstream model id (may be a cross-region
    /// inference profile like `us.anthropic.claude-sonnet-4-5-20250929-v1:0`, or an ARN).
    /// `body` is the client's Anthropic Messages JSON (model already rewritten). Error: a
    /// one-line reason with no secret.
    pub async fn request(
        &self,
        client: &HttpClient,
        op: Operation,
        model: &str,
        client_headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let (path, accept, payload) = build(op, model, client_headers, body)?;
        let auth = self.credentials.resolve(client).await?;
        let amz_date = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        self.sign(&path, accept, payload, &auth, &amz_date)
    }

    /// Builds the request for `path` with `payload`, authenticated with `auth` at `amz_date`.
    fn sign(
        &self,
        path: &str,
        accept: &'static str,
        payload: Bytes,
        auth: &Resolved,
        amz_date: &str,
    ) -> Result<Request<Full<Bytes>>, String> {
        let uri: http::Uri = format!("{}{path}", self.endpoint)
            .parse()
            .map_err(|e| format!("bad Bedrock endpoint {}: {e}", self.endpoint))?;
        let host =
            host_header(&uri).ok_or_else(|| format!("Bedrock endpoint {} has no host", self.endpoint))?;
        let wire_path = uri.path().to_owned();
        let query = uri.query().unwrap_or("").to_owned();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(payload.clone()))
            .map_err(|e| format!("building the Bedrock request: {e}"))?;
        let headers = req.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&host).map_err(|_| "the Bedrock host is not a valid header".to_owned())?,
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(payload.len()));
        let authorization = match auth {
            Resolved::ApiKey(key) => format!("Bearer {}", key.expose()),
            Resolved::SigV4(creds) => {
                let date = HeaderValue::from_str(amz_date).map_err(|_| "bad x-amz-date".to_owned())?;
                headers.insert(HeaderName::from_static("x-amz-date"), date);
                let mut signed = vec![
                    ("accept", accept),
                    ("content-type", "application/json"),
                    ("host", host.as_str()),
                    ("x-amz-date", amz_date),
                ];
                if let Some(token) = &creds.session_token {
                    let mut v = HeaderValue::from_str(token.expose())
                        .map_err(|_| "the AWS session token is not a valid header value".to_owned())?;
                    v.set_sensitive(true);
                    headers.insert(HeaderName::from_static("x-amz-security-token"), v);
                    signed.push(("x-amz-security-token", token.expose()));
                }
                sigv4::authorization(
                    &sigv4::SigningInput {
                        method: "POST",
                        path: &wire_path,
                        query: &query,
                        headers: &signed,
                        payload: &payload,
                        region: &self.config.region,
                        service: SIGNING_SERVICE,
                        amz_date,
                    },
                    creds.access_key_id.expose(),
                    creds.secret_access_key.expose(),
                )
            }
        };
        let mut v = HeaderValue::from_str(&authorization)
            .map_err(|_| "the AWS credential is not a valid header value".to_owned())?;
        v.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, v);
        Ok(req)
    }

    /// The client's response in Anthropic format: 2xx JSON passes unchanged; an event stream is
    /// transcoded to Anthropic SSE; count-tokens answers are converted; errors are mapped.
    /// `idle` = longest upstream silence allowed inside a stream.
    pub fn response<B>(&self, op: Operation, resp: Response<B>, idle: Duration) -> Response<BoxedBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = resp.into_parts();
        if !parts.status.is_success() {
            return error_response(&parts, body);
        }
        let mut headers = response_headers(&parts.headers);
        let event_stream = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/vnd.amazon.eventstream"));
        let body = match op {
            Operation::Messages { stream: true } if event_stream => {
                headers.remove(header::CONTENT_LENGTH);
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                boxed(Transcoder::new(body, idle))
            }
            Operation::CountTokens => {
                headers.remove(header::CONTENT_LENGTH);
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                boxed(Converted::new(
                    body,
                    MAX_SMALL_ANSWER,
                    Box::new(count_tokens_answer),
                ))
            }
            Operation::Messages { .. } => boxed(body),
        };
        let mut out = Response::new(body);
        *out.status_mut() = parts.status;
        *out.headers_mut() = headers;
        out
    }
}

/// The path, `accept` and body of the upstream request.
fn build(
    op: Operation,
    model: &str,
    client_headers: &HeaderMap,
    body: &Bytes,
) -> Result<(String, &'static str, Bytes), String> {
    let betas = betas(client_headers);
    let mut set = Vec::new();
    if !betas.is_empty() {
        set.push(("anthropic_beta", serde_json::Value::from(betas)));
    }
    let invoke = edit(
        body,
        &BodyEdit {
            remove: REMOVED,
            set,
            default: vec![("anthropic_version", ANTHROPIC_VERSION.into())],
        },
    )?;
    Ok(match op {
        Operation::Messages { stream: false } => (
            format!("/model/{}/invoke", encode_label(model)),
            "application/json",
            invoke,
        ),
        Operation::Messages { stream: true } => (
            format!("/model/{}/invoke-with-response-stream", encode_label(model)),
            "application/vnd.amazon.eventstream",
            invoke,
        ),
        Operation::CountTokens => {
            let counted = count_tokens_body(&invoke)?;
            (
                format!("/model/{}/count-tokens", encode_label(&count_tokens_model(model))),
                "application/json",
                counted,
            )
        }
    })
}

/// The client's betas, from every `anthropic-beta` header, comma-separated, in order, once each.
fn betas(headers: &HeaderMap) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for v in headers.get_all("anthropic-beta") {
        let Ok(v) = v.to_str() else { continue };
        for b in v.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            if seen.insert(b) {
                out.push(b.to_owned());
            }
        }
    }
    out
}

/// A URI path label as the AWS SDKs encode it: everything but unreserved characters is `%XX`.
pub fn encode_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The model id `CountTokens` accepts: its model id parameter is a foundation model
/// (`FoundationModelVersionIdentifier`); cross-region inference profiles are refused, so their
/// geography prefix (and an inference-profile ARN's prefix) is dropped.
pub fn count_tokens_model(model: &str) -> String {
    let id = model
        .split_once(":inference-profile/")
        .map_or(model, |(_, profile)| profile);
    match id.split_once('.') {
        Some((geo, rest)) if GEO_PREFIXES.contains(&geo) && rest.contains('.') => rest.to_owned(),
        _ => id.to_owned(),
    }
}

/// `{"input":{"invokeModel":{"body":"<base64 of the invoke body>"}}}`: `body` is a blob, which
/// the REST-JSON protocol carries base64-encoded. The invoke schema requires `max_tokens`,
/// which a count-tokens request does not have: it gets one (more than a thinking budget, which
/// the schema requires; it does not change the count).
fn count_tokens_body(invoke: &[u8]) -> Result<Bytes, String> {
    #[derive(serde::Deserialize)]
    struct Thinking {
        budget_tokens: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct Peek {
        thinking: Option<Thinking>,
    }
    let budget = serde_json::from_slice::<Peek>(invoke)
        .ok()
        .and_then(|p| p.thinking)
        .and_then(|t| t.budget_tokens)
        .unwrap_or(0);
    let body = edit(
        invoke,
        &BodyEdit {
            default: vec![("max_tokens", (budget + 1).into())],
            ..BodyEdit::default()
        },
    )?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
    Ok(Bytes::from(
        serde_json::json!({ "input": { "invokeModel": { "body": encoded } } }).to_string(),
    ))
}

/// `{"inputTokens":N}` as `{"input_tokens":N}`.
fn count_tokens_answer(answer: Bytes) -> Result<Bytes, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        input_tokens: u64,
    }
    let a: Answer = serde_json::from_slice(&answer)
        .map_err(|e| format!("Bedrock's count-tokens answer is unreadable: {e}"))?;
    Ok(Bytes::from(
        serde_json::json!({ "input_tokens": a.input_tokens }).to_string(),
    ))
}

/// The `Host` header for `uri`: its authority without a default port.
fn host_header(uri: &http::Uri) -> Option<String> {
    let auth = uri.authority()?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    Some(match auth.port_u16() {
        Some(p) if p != default => format!("{}:{p}", auth.host()),
        _ => auth.host().to_owned(),
    })
}

/// A Bedrock error as an Anthropic one (status from the `x-amzn-ErrorType` header or the HTTP
/// status; the body's `message`, and its `__type` when the header is absent, read when it
/// arrives).
fn error_response<B>(parts: &http::response::Parts, body: B) -> Response<BoxedBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let header_type = parts
        .headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|s| errors::exception_name(s).to_owned())
        .filter(|s| !s.is_empty());
    let mapping = errors::classify(header_type.as_deref(), parts.status);
    let request_id = parts
        .headers
        .get("x-amzn-requestid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let convert = move |raw: Bytes| -> Result<Bytes, String> {
        #[derive(serde::Deserialize, Default)]
        struct AwsError {
            #[serde(alias = "Message")]
            message: Option<String>,
            #[serde(rename = "__type")]
            kind: Option<String>,
        }
        let parsed: AwsError = serde_json::from_slice(&raw).unwrap_or_default();
        let exception = header_type.or(parsed.kind.map(|k| errors::exception_name(&k).to_owned()));
        // The body's type refines the error type only within the status already sent.
        let row = exception
            .as_deref()
            .and_then(errors::lookup)
            .filter(|m| m.status == mapping.status)
            .copied()
            .unwrap_or(mapping);
        let message = parsed
            .message
            .unwrap_or_else(|| String::from_utf8_lossy(&raw).trim().chars().take(500).collect());
        let text = errors::client_message(&row, exception.as_deref(), &message);
        Ok(error_body(row.error_type, &text, &request_id))
    };
    let mut out = Response::new(boxed(Converted::new(body, MAX_SMALL_ANSWER, Box::new(convert))));
    *out.status_mut() = StatusCode::from_u16(mapping.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = out.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for name in [header::RETRY_AFTER, HeaderName::from_static("x-amzn-requestid")] {
        if let Some(v) = parts.headers.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
