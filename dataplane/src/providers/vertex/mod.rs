//! Google Vertex AI, Anthropic models (`publishers/anthropic`).
//!
//! * URL: `{endpoint}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/
//!   {model}:rawPredict` (`:streamRawPredict` for a stream; `count-tokens:rawPredict` for
//!   count_tokens). The endpoint defaults to `https://{region}-aiplatform.googleapis.com`, or
//!   `https://aiplatform.googleapis.com` for region `global`. The model (ids use `@`, e.g.
//!   `claude-sonnet-4-5@20250929`) is one percent-encoded path segment.
//! * Body: the Anthropic Messages body with `model` removed (it is in the URL) and
//!   `anthropic_version: "vertex-2023-10-16"` added when absent; every other member keeps its
//!   bytes. count_tokens keeps `model` (set to the routed model) and gets the version too.
//! * Headers: only what Google needs: `content-type`, the client's `anthropic-beta` (Vertex
//!   takes beta flags as that header), `authorization: Bearer <Google access token>`; the
//!   client's session and attribution headers stay inside the gateway.
//! * Answers: Anthropic JSON and SSE, passed through unchanged; errors mapped by
//!   [`errors`] (Google errors to Anthropic errors, never a 401 to the client).
//! * Tokens: see [`token`]; cached in an [`oauth::TokenCache`], dropped when Vertex answers 401.

pub mod token;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::cloud_errors::{self as errors, Cloud};
use crate::body::BoxedBody;
use crate::providers::Operation;
use crate::providers::body_edit::{BodyEdit, edit};
use crate::providers::oauth::{self, TokenCache};
use crate::secret::CredentialReader;
use crate::secret::Secret;
use crate::upstream::{HttpClient, forwarded_headers};
use token::{DEFAULT_METADATA_HOST, ServiceAccount, TokenSource};

/// The `anthropic_version` Vertex AI requires in the body.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Client headers forwarded to Google (after [`forwarded_headers`]).
const FORWARDED_TO_GOOGLE: &[&str] = &["anthropic-beta"];

/// A Vertex AI provider's configuration.
#[derive(Debug, Clone)]
pub struct VertexConfig {
    /// The Google Cloud project id.
    pub project: String,
    /// The region (`us-east5`, `europe-west1`, ...) or `global`.
    pub region: String,
    /// The API endpoint (scheme and host, no path), when not the default for the region.
    pub endpoint: Option<String>,
    /// Where access tokens come from.
    pub auth: GcpAuth,
}

/// Where the gateway's Google credentials come from.
#[derive(Debug, Clone)]
pub enum GcpAuth {
    /// A service account JSON key file's contents (a mounted Secret).
    ServiceAccountKey(Secret),
    /// Application default credentials: the service account key file named by
    /// `GOOGLE_APPLICATION_CREDENTIALS` (re-read at every refresh), else the metadata server
    /// (GKE Workload Identity) at `GCE_METADATA_HOST` (default `metadata.google.internal`).
    Environment,
    /// A static bearer token (tests, short-lived use).
    AccessToken(Secret),
}

/// The Vertex AI provider: builds upstream requests and maps answers.
pub struct Vertex {
    config: VertexConfig,
    source: TokenSource,
    cache: TokenCache,
    reader: Arc<dyn CredentialReader + Send + Sync>,
}

impl std::fmt::Debug for Vertex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vertex")
            .field("project", &self.config.project)
            .field("region", &self.config.region)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Vertex {
    /// A provider for `config`; `reader` reads the environment and key files. A credential
    /// problem is not an error here: it is reported by every [`Vertex::request`].
    pub fn new(config: VertexConfig, reader: Arc<dyn CredentialReader + Send + Sync>) -> Self {
        let source = match &config.auth {
            GcpAuth::ServiceAccountKey(key) => {
                match ServiceAccount::parse(key.expose(), "the service account key") {
                    Ok(sa) => TokenSource::ServiceAccount(Arc::new(sa)),
                    Err(why) => TokenSource::Unusable(why),
                }
            }
            GcpAuth::Environment => match reader
                .env("GOOGLE_APPLICATION_CREDENTIALS")
                .filter(|p| !p.trim().is_empty())
            {
                Some(path) => TokenSource::KeyFile(path.trim().to_owned()),
                None => TokenSource::Metadata(
                    reader
                        .env("GCE_METADATA_HOST")
                        .map(|h| h.trim().to_owned())
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_owned()),
                ),
            },
            GcpAuth::AccessToken(t) => TokenSource::Static(t.clone()),
        };
        let cache = TokenCache::new(source.describe());
        Self {
            config,
            source,
            cache,
            reader,
        }
    }

    /// `{endpoint}/v1/projects/{project}/locations/{region}/publishers/{publisher}/models`, the
    /// endpoint the region's own (or the global one) unless configured; the error says which
    /// setting is unusable.
    fn models_prefix(&self, publisher: &str) -> Result<String, String> {
        let VertexConfig {
            project,
            region,
            endpoint,
            ..
        } = &self.config;
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("Vertex AI region {region:?} is not a region name"));
        }
        if project.is_empty() {
            return Err("Vertex AI project is empty".to_owned());
        }
        let base = match endpoint {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None if region == "global" => "https://aiplatform.googleapis.com".to_owned(),
            None => format!("https://{region}-aiplatform.googleapis.com"),
        };
        Ok(format!(
            "{base}/v1/projects/{}/locations/{region}/publishers/{publisher}/models",
            segment(project)?
        ))
    }

    /// The URL for `op` on `model`; the error says which configuration value is unusable.
    pub fn url(&self, op: Operation, model: &str) -> Result<String, String> {
        let prefix = self.models_prefix("anthropic")?;
        Ok(match op {
            Operation::Messages { stream } => format!(
                "{prefix}/{}:{}",
                segment(model)?,
                if stream { "streamRawPredict" } else { "rawPredict" }
            ),
            Operation::CountTokens => format!("{prefix}/count-tokens:rawPredict"),
        })
    }

    /// The body Vertex AI takes for `op` (see the module doc).
    pub fn body(op: Operation, model: &str, body: &[u8]) -> Result<Bytes, String> {
        let version = ("anthropic_version", json!(VERTEX_ANTHROPIC_VERSION));
        match op {
            Operation::Messages { .. } => edit(
                body,
                &BodyEdit {
                    remove: &["model"],
                    default: vec![version],
                    ..BodyEdit::default()
                },
            ),
            Operation::CountTokens => edit(
                body,
                &BodyEdit {
                    set: vec![("model", json!(model))],
                    default: vec![version],
                    ..BodyEdit::default()
                },
            ),
        }
    }

    /// The upstream request for the client's `op` on `model`; the error is for the client
    /// (never a credential).
    pub async fn request(
        &self,
        client: &HttpClient,
        op: Operation,
        model: &str,
        client_headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let url = self.url(op, model)?;
        let body = Self::body(op, model, body)?;
        let token = match &self.source {
            TokenSource::Static(t) => t.clone(),
            source => {
                let reader = self.reader.clone();
                self.cache
                    .get(|| async move { source.fetch(client, reader.as_ref()).await })
                    .await?
            }
        };
        let forwarded = forwarded_headers(client_headers);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .body(Full::new(body.clone()))
            .map_err(|e| format!("bad Vertex AI URL {url}: {e}"))?;
        let headers = req.headers_mut();
        for name in FORWARDED_TO_GOOGLE {
            for v in forwarded.get_all(*name) {
                headers.append(HeaderName::from_static(name), v.clone());
            }
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        headers.insert(
            header::AUTHORIZATION,
            oauth::bearer(&self.source.describe(), &token)?,
        );
        Ok(req)
    }

    /// The client's response for Vertex AI's answer (see [`errors`]); a 401 also drops the
    /// cached token so the next request fetches a new one.
    pub fn response<B>(&self, _op: Operation, resp: Response<B>) -> Response<BoxedBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.cache.invalidate();
        }
        errors::map_response(Cloud::Vertex, resp)
    }
}

/// Gemini models on Vertex AI (`publishers/google`): the Gemini API's body and answers
/// (`GenerateContentResponse` JSON and SSE, the same `usageMetadata`) at Vertex's URL, with a
/// Google access token from the same cache as the Anthropic models'
/// (<https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference>).
impl Vertex {
    /// `{endpoint}/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:
    /// {generateContent | streamGenerateContent?alt=sse | countTokens}`, the model (its
    /// `models/` prefix dropped) one percent-encoded segment; the error says which
    /// configuration value is unusable.
    pub fn gemini_url(&self, model: &str, method: crate::gemini::Method) -> Result<String, String> {
        Ok(format!(
            "{}/{}:{}{}",
            self.models_prefix("google")?,
            segment(crate::gemini::bare_model(model))?,
            method.name(),
            if method.is_stream() { "?alt=sse" } else { "" }
        ))
    }

    /// The upstream request for a Gemini `method` on `model`: the client's body unchanged,
    /// `authorization: Bearer <Google access token>`; the error is for the client (never a
    /// credential).
    pub async fn gemini_request(
        &self,
        client: &HttpClient,
        method: crate::gemini::Method,
        model: &str,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let url = self.gemini_url(model, method)?;
        let token = match &self.source {
            TokenSource::Static(t) => t.clone(),
            source => {
                let reader = self.reader.clone();
                self.cache
                    .get(|| async move { source.fetch(client, reader.as_ref()).await })
                    .await?
            }
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .body(Full::new(body.clone()))
            .map_err(|e| format!("bad Vertex AI URL {url}: {e}"))?;
        let headers = req.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        headers.insert(
            header::AUTHORIZATION,
            oauth::bearer(&self.source.describe(), &token)?,
        );
        Ok(req)
    }
}

/// `s` as one URL path segment: unreserved characters and `@` kept, the rest percent-encoded;
/// `.` and `..` refused (they would move up the path).
pub fn segment(s: &str) -> Result<String, String> {
    if s.is_empty() || s == "." || s == ".." {
        return Err(format!("{s:?} cannot be a URL path segment"));
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) struct Creds(pub HashMap<String, String>);
    impl CredentialReader for Creds {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn vertex(region: &str, endpoint: Option<&str>, auth: GcpAuth) -> Vertex {
        Vertex::new(
            VertexConfig {
                project: "my-proj".into(),
                region: region.into(),
                endpoint: endpoint.map(Into::into),
                auth,
            },
            Arc::new(Creds(HashMap::new())),
        )
    }

    fn static_auth() -> GcpAuth {
        GcpAuth::AccessToken(Secret::new("ya29.static-token"))
    }

    #[test]
    fn urls_for_regional_global_and_count_tokens() {
        let v = vertex("us-east5", None, static_auth());
        assert_eq!(
            v.url(
                Operation::Messages { stream: false },
                "claude-sonnet-4-5@20250929"
            )
            .unwrap(),
            "https://us-east5-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
        );
        assert_eq!(
            v.url(Operation::Messages { stream: true }, "claude-sonnet-4-5@20250929")
                .unwrap(),
            "https://us-east5-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
        );
        let g = vertex("global", None, static_auth());
        assert_eq!(
            g.url(Operation::Messages { stream: true }, "claude-opus-4-8")
                .unwrap(),
            "https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global/publishers/anthropic/models/claude-opus-4-8:streamRawPredict"
        );
        assert_eq!(
            g.url(Operation::CountTokens, "claude-opus-4-8").unwrap(),
            "https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global/publishers/anthropic/models/count-tokens:rawPredict"
        );
        let e = vertex("europe-west1", Some("http://127.0.0.1:9/"), static_auth());
        assert_eq!(
            e.url(Operation::CountTokens, "m").unwrap(),
            "http://127.0.0.1:9/v1/projects/my-proj/locations/europe-west1/publishers/anthropic/models/count-tokens:rawPredict"
        );
    }

    #[test]
    fn the_model_is_one_encoded_segment() {
        let v = vertex("us-east5", None, static_auth());
        let url = v
            .url(Operation::Messages { stream: false }, "../x/y:z?q#f")
            .unwrap();
        assert!(
            url.ends_with("/models/..%2Fx%2Fy%3Az%3Fq%23f:rawPredict"),
            "{url}"
        );
        assert!(v.url(Operation::Messages { stream: false }, "..").is_err());
        assert!(v.url(Operation::Messages { stream: false }, "").is_err());
        assert!(
            vertex("us-east5.evil.com/x", None, static_auth())
                .url(Operation::CountTokens, "m")
                .is_err()
        );
    }

    #[test]
    fn message_bodies_lose_model_and_gain_the_version_byte_for_byte() {
        let body = br#"{"model":"claude-x","max_tokens":5,"stream":true,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":"hi"}],"zz":{"b":1,"a":2}}"#;
        let out = Vertex::body(Operation::Messages { stream: true }, "claude-x@1", body).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"max_tokens":5,"stream":true,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":"hi"}],"zz":{"b":1,"a":2},"anthropic_version":"vertex-2023-10-16"}"#
        );
        // A client that already says the version keeps it.
        let out = Vertex::body(
            Operation::Messages { stream: false },
            "m",
            br#"{"anthropic_version":"vertex-2023-10-16","model":"m","messages":[]}"#,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            br#"{"anthropic_version":"vertex-2023-10-16","messages":[]}"#
        );
        assert!(Vertex::body(Operation::Messages { stream: false }, "m", b"[]").is_err());
    }

    #[test]
    fn count_tokens_bodies_keep_the_routed_model() {
        let out = Vertex::body(
            Operation::CountTokens,
            "claude-haiku-4-5@20251001",
            br#"{"model":"haiku","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            br#"{"model":"claude-haiku-4-5@20251001","messages":[{"role":"user","content":"x"}],"anthropic_version":"vertex-2023-10-16"}"#
        );
    }

    #[tokio::test]
    async fn only_google_headers_are_sent() {
        let client = crate::upstream::build_client().unwrap();
        let v = vertex("us-east5", None, static_auth());
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer vk-client".parse().unwrap());
        h.insert("x-api-key", "vk-client".parse().unwrap());
        h.insert(
            "anthropic-beta",
            "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
                .parse()
                .unwrap(),
        );
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());
        h.insert("x-claude-code-session-id", "s1".parse().unwrap());
        h.insert("content-type", "application/json; charset=utf-8".parse().unwrap());
        let body = Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        let req = v
            .request(&client, Operation::Messages { stream: false }, "m@1", &h, &body)
            .await
            .unwrap();
        assert_eq!(req.method(), Method::POST);
        let out = req.headers();
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept-encoding",
                "anthropic-beta",
                "authorization",
                "content-length",
                "content-type"
            ]
        );
        assert_eq!(out["authorization"], "Bearer ya29.static-token");
        assert!(out["authorization"].is_sensitive());
        assert_eq!(
            out["anthropic-beta"],
            "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
        );
        assert_eq!(out["content-type"], "application/json");
        let expected = br#"{"messages":[],"anthropic_version":"vertex-2023-10-16"}"#;
        assert_eq!(out["content-length"], expected.len().to_string().as_str());
    }

    #[test]
    fn gemini_urls_for_each_method() {
        use crate::gemini::Method as G;
        let v = vertex("us-central1", None, static_auth());
        assert_eq!(
            v.gemini_url("gemini-2.5-pro", G::Generate).unwrap(),
            "https://us-central1-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"
        );
        let g = vertex("global", None, static_auth());
        assert_eq!(
            g.gemini_url("models/gemini-2.5-flash", G::StreamGenerate)
                .unwrap(),
            "https://aiplatform.googleapis.com/v1/projects/my-proj/locations/global/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let e = vertex("europe-west1", Some("http://127.0.0.1:9/"), static_auth());
        assert_eq!(
            e.gemini_url("m", G::CountTokens).unwrap(),
            "http://127.0.0.1:9/v1/projects/my-proj/locations/europe-west1/publishers/google/models/m:countTokens"
        );
        assert!(
            v.gemini_url("../x?y", G::Generate)
                .unwrap()
                .ends_with("/models/..%2Fx%3Fy:generateContent")
        );
        assert!(v.gemini_url("..", G::Generate).is_err());
        assert!(
            vertex("us-east5.evil.com/x", None, static_auth())
                .gemini_url("m", G::Generate)
                .is_err()
        );
    }

    #[tokio::test]
    async fn gemini_requests_carry_the_token_and_the_body_unchanged() {
        let client = crate::upstream::build_client().unwrap();
        let v = vertex("us-central1", None, static_auth());
        let body = Bytes::from_static(br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#);
        let req = v
            .gemini_request(
                &client,
                crate::gemini::Method::StreamGenerate,
                "gemini-2.5-pro",
                &body,
            )
            .await
            .unwrap();
        assert_eq!(req.uri().query(), Some("alt=sse"));
        let h = req.headers();
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept-encoding",
                "authorization",
                "content-length",
                "content-type"
            ]
        );
        assert_eq!(h["authorization"], "Bearer ya29.static-token");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["content-length"], body.len().to_string().as_str());
    }

    #[tokio::test]
    async fn credential_problems_are_errors_without_secrets() {
        let client = crate::upstream::build_client().unwrap();
        let bad = vertex(
            "us-east5",
            None,
            GcpAuth::ServiceAccountKey(Secret::new(
                r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----","client_email":"a@b","private_key_id":"k"}"#,
            )),
        );
        let err = bad
            .request(
                &client,
                Operation::CountTokens,
                "m",
                &HeaderMap::new(),
                &Bytes::from_static(b"{}"),
            )
            .await
            .unwrap_err();
        assert!(err.contains("PKCS#8") && !err.contains("c2VjcmV0"), "{err}");
        // Environment with a key file that is missing.
        let env = Vertex::new(
            VertexConfig {
                project: "p".into(),
                region: "global".into(),
                endpoint: None,
                auth: GcpAuth::Environment,
            },
            Arc::new(Creds(HashMap::from([(
                "GOOGLE_APPLICATION_CREDENTIALS".to_owned(),
                "/var/run/sa/key.json".to_owned(),
            )]))),
        );
        let err = env
            .request(
                &client,
                Operation::CountTokens,
                "m",
                &HeaderMap::new(),
                &Bytes::from_static(b"{}"),
            )
            .await
            .unwrap_err();
        assert!(err.contains("/var/run/sa/key.json"), "{err}");
    }

    #[tokio::test]
    async fn service_account_and_metadata_tokens_are_fetched_and_cached() {
        use crate::providers::oauth::tests::{Recorded, TestServer};
        let server = TestServer::start(|r: &Recorded| match r.path.as_str() {
            "/token" => (
                200,
                r#"{"access_token":"ya29.sa","expires_in":3599,"token_type":"Bearer"}"#.into(),
            ),
            "/computeMetadata/v1/instance/service-accounts/default/token"
                if r.headers.get("metadata-flavor").is_some_and(|v| v == "Google") =>
            {
                (
                    200,
                    r#"{"access_token":"ya29.md","expires_in":3599,"token_type":"Bearer"}"#.into(),
                )
            }
            _ => (403, "{}".into()),
        })
        .await;
        let client = crate::upstream::build_client().unwrap();
        let key = token::tests::key_json(&format!("{}/token", server.url));
        let sa = vertex("us-east5", None, GcpAuth::ServiceAccountKey(Secret::new(&key)));
        let (h, body) = (HeaderMap::new(), Bytes::from_static(b"{}"));
        for _ in 0..2 {
            let req = sa
                .request(&client, Operation::CountTokens, "m", &h, &body)
                .await
                .unwrap();
            assert_eq!(req.headers()["authorization"], "Bearer ya29.sa");
        }
        let seen = server.requests();
        assert_eq!(seen.len(), 1, "cached");
        assert_eq!(seen[0].method, "POST");
        let form: HashMap<String, String> = url::form_urlencoded::parse(&seen[0].body).into_owned().collect();
        assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
        assert_eq!(form["assertion"].split('.').count(), 3);

        let host = server.url.trim_start_matches("http://").to_owned();
        let md = Vertex::new(
            VertexConfig {
                project: "p".into(),
                region: "global".into(),
                endpoint: None,
                auth: GcpAuth::Environment,
            },
            Arc::new(Creds(HashMap::from([("GCE_METADATA_HOST".to_owned(), host)]))),
        );
        let req = md
            .request(&client, Operation::CountTokens, "m", &h, &body)
            .await
            .unwrap();
        assert_eq!(req.headers()["authorization"], "Bearer ya29.md");
        assert_eq!(server.requests()[1].method, "GET");
    }
}
