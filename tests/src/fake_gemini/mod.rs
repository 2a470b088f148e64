//! A faithful, fast fake of the Gemini API upstream (Google AI Studio, and the Vertex AI
//! publisher-model paths), in the style of [`crate::fake_anthropic`].
//!
//! [`FakeGemini::start`] binds a hyper 1 HTTP/1.1 server that speaks Google's wire format:
//!
//! * `POST /v1beta/models/{model}:generateContent` (also under `/v1/`),
//!   `:streamGenerateContent?alt=sse` (`data: {GenerateContentResponse}` events; without
//!   `alt=sse`, a streamed JSON array of the same objects) and `:countTokens`
//!   (`{"totalTokens":N}`); `GET /v1beta/models` and `/v1beta/models/{model}`. Auth: the
//!   `x-goog-api-key` header or the `key` query parameter.
//! * Vertex AI: `POST /v1/projects/{p}/locations/{r}/publishers/google/models/{model}:{method}`
//!   (also `/v1beta1/`), the same methods, with `Authorization: Bearer <api_key>`.
//!
//! Every request is recorded ([`RecordedRequest`]) with the `usageMetadata` the fake returned.
//!
//! # Deterministic behaviour
//!
//! * Auth errors: no key -> 403 `PERMISSION_DENIED`; a wrong key -> 400 `INVALID_ARGUMENT` with an
//!   `ErrorInfo` of reason `API_KEY_INVALID` (as the real API answers); Vertex without the right
//!   bearer -> 401 `UNAUTHENTICATED`.
//! * Usage (`usageMetadata`): `promptTokenCount` = request body length / 4 (with
//!   `cachedContentTokenCount` = half of it in scenario `cache`), `candidatesTokenCount` = words of
//!   the reply or [`TOOL_CALL_OUTPUT_TOKENS`], `thoughtsTokenCount` = [`THOUGHTS_TOKENS`] in scenario
//!   `reasoning`, `totalTokenCount` = prompt + candidates + thoughts.
//! * Reply: [`DEFAULT_REPLY`]; `Tool said: <output>` when the last content carries a
//!   `functionResponse` (Gemini CLI's `run_shell_command` output is unwrapped to what the command
//!   printed); a `functionCall` of [`SHELL_TOOL`] running `echo X` when the last user text contains
//!   `run echo X` and the request declares that tool; when `generationConfig` asks for JSON with a
//!   schema (Gemini CLI's model router and next-speaker check), a JSON instance of the schema
//!   (first `enum` value, `1` for numbers, `"fake"` for strings).
//! * Scenarios: [`Scenario`], the same names as the fake OpenAI, in Google's error format; chosen
//!   by the [`SCENARIO_HEADER`] header or a `[[scenario:NAME]]` marker in the last user content.
//!
//! # Control endpoints
//!
//! `GET /_fake/requests` returns the recorded requests as JSON, `POST /_fake/clear` forgets them.

mod reply;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::fake_anthropic::FakeBody;
pub use crate::fake_anthropic::RecordedRequest;
use crate::fake_openai::header_scenario;
use crate::fake_openai::server::{Answer, Api, BoxFuture, Ctx, LogConfig, Server, json_response};
pub use crate::fake_openai::{SCENARIO_HEADER, Scenario};

/// The reply text when nothing more specific applies.
pub const DEFAULT_REPLY: &str = "Hello from fake-gemini.";

/// Gemini CLI's shell tool: a prompt containing `run echo X` makes the fake call it.
pub const SHELL_TOOL: &str = "run_shell_command";

/// `candidatesTokenCount` of a function call reply.
pub const TOOL_CALL_OUTPUT_TOKENS: u64 = 24;

/// `thoughtsTokenCount` in scenario `reasoning`.
pub const THOUGHTS_TOKENS: u64 = 64;

/// Seconds of the `RetryInfo.retryDelay` sent with `status-429`.
pub const RETRY_DELAY_SECS: u64 = 7;

/// Largest accepted request body; larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Models listed by `GET /v1beta/models`.
pub const MODELS: [&str; 5] = [
    "gemini-3.1-pro-preview",
    "gemini-3.5-flash",
    "gemini-3.5-flash-lite",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
];

/// `promptTokenCount` for a request body of `len` bytes (`len / 4`).
pub fn prompt_tokens_for_body_len(len: usize) -> u64 {
    (len / 4) as u64
}

/// Configuration of a [`FakeGemini`].
#[derive(Debug, Clone)]
pub struct FakeGeminiConfig {
    /// Address to bind; `None` binds `127.0.0.1:0` (a free port).
    pub addr: Option<SocketAddr>,
    /// The key expected in `x-goog-api-key` / `?key=` (and as the Vertex bearer token).
    pub api_key: String,
    /// Record requests (turn off for benchmarks).
    pub record: bool,
    /// Keep at most this many recorded requests (the oldest are dropped first).
    pub max_recorded: usize,
}

impl FakeGeminiConfig {
    /// Defaults with the given expected key.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            ..Self::default()
        }
    }
}

impl Default for FakeGeminiConfig {
    /// `127.0.0.1:0`, key `AIza-fake-gemini-upstream-key`, recording on, at most 4096 requests.
    fn default() -> Self {
        Self {
            addr: None,
            api_key: "AIza-fake-gemini-upstream-key".to_owned(),
            record: true,
            max_recorded: 4096,
        }
    }
}

/// A running fake Gemini upstream. Dropping it stops the server.
pub struct FakeGemini {
    server: Server,
    config: FakeGeminiConfig,
}

impl FakeGemini {
    /// Binds `config.addr` (default `127.0.0.1:0`) and starts serving on the current Tokio
    /// runtime.
    pub async fn start(config: FakeGeminiConfig) -> anyhow::Result<FakeGemini> {
        let log = LogConfig {
            record: config.record,
            max_recorded: config.max_recorded,
            max_body_bytes: MAX_BODY_BYTES,
        };
        let api = GeminiApi {
            api_key: config.api_key.clone(),
        };
        let server = Server::start("fake-gemini", config.addr, log, api).await?;
        Ok(FakeGemini { server, config })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://IP:PORT` (no trailing slash, no `/v1beta`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.server.clear();
    }

    /// The configuration in use.
    pub fn config(&self) -> &FakeGeminiConfig {
        &self.config
    }
}

/// A model method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelMethod {
    Generate,
    Stream,
    CountTokens,
}

/// A parsed request path.
enum Route<'a> {
    /// `.../models/{model}:{method}`; `vertex` for the publisher-model paths.
    Model {
        model: &'a str,
        method: ModelMethod,
        vertex: bool,
    },
    /// `GET /v1beta/models[/{model}]`.
    List(Option<&'a str>),
    Unknown,
}

fn parse_route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let gemini = path
        .strip_prefix("/v1beta/models")
        .or_else(|| path.strip_prefix("/v1/models"));
    if let Some(rest) = gemini {
        if method == Method::GET {
            return match rest.strip_prefix('/') {
                None if rest.is_empty() => Route::List(None),
                Some(id) if !id.is_empty() && !id.contains(['/', ':']) => Route::List(Some(id)),
                _ => Route::Unknown,
            };
        }
        return rest
            .strip_prefix('/')
            .map_or(Route::Unknown, |r| model_route(method, r, false));
    }
    // /v1/projects/{p}/locations/{r}/publishers/google/models/{model}:{method}
    let vertex = path
        .strip_prefix("/v1/projects/")
        .or_else(|| path.strip_prefix("/v1beta1/projects/"));
    if let Some(rest) = vertex {
        let segments: Vec<&str> = rest.splitn(7, '/').collect();
        if let [_, "locations", _, "publishers", "google", "models", tail] = segments.as_slice() {
            return model_route(method, tail, true);
        }
    }
    Route::Unknown
}

fn model_route<'a>(method: &Method, tail: &'a str, vertex: bool) -> Route<'a> {
    let Some((model, verb)) = tail.rsplit_once(':') else {
        return Route::Unknown;
    };
    let method_kind = match verb {
        "generateContent" => ModelMethod::Generate,
        "streamGenerateContent" => ModelMethod::Stream,
        "countTokens" => ModelMethod::CountTokens,
        _ => return Route::Unknown,
    };
    if method != Method::POST || model.is_empty() || model.contains('/') {
        return Route::Unknown;
    }
    Route::Model {
        model,
        method: method_kind,
        vertex,
    }
}

struct GeminiApi {
    api_key: String,
}

impl Api for GeminiApi {
    fn route<'a>(&'a self, ctx: &'a Ctx, parts: &'a Parts, body: &'a Bytes) -> BoxFuture<'a, Answer> {
        Box::pin(async move { self.route_inner(ctx, parts, body) })
    }

    fn body_error(&self, _ctx: &Ctx, status: u16, message: &str) -> Response<FakeBody> {
        error(status, "INVALID_ARGUMENT", message, Vec::new())
    }
}

impl GeminiApi {
    fn route_inner(&self, ctx: &Ctx, parts: &Parts, body: &Bytes) -> Answer {
        let path = parts.uri.path();
        let route = parse_route(&parts.method, path);
        let vertex = matches!(route, Route::Model { vertex: true, .. });
        if !matches!(route, Route::Unknown) {
            if let Some(response) = self.auth_error(parts, vertex) {
                return response.into();
            }
        }
        match route {
            Route::Unknown => error(
                404,
                "NOT_FOUND",
                &format!("Method not found: {} {path}", parts.method),
                Vec::new(),
            )
            .into(),
            Route::List(id) => models(id).into(),
            Route::Model { model, method, .. } => self.model_call(ctx, parts, body, model, method),
        }
    }

    fn auth_error(&self, parts: &Parts, vertex: bool) -> Option<Response<FakeBody>> {
        if vertex {
            let ok = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| t.trim() == self.api_key);
            return (!ok).then(|| {
                error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                     login cookie or other valid authentication credential. See \
                     https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    vec![json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                                "domain": "googleapis.com",
                                "metadata": {"service": "aiplatform.googleapis.com"}})],
                )
            });
        }
        let header = parts
            .headers
            .get("x-goog-api-key")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let query = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "key")
                .map(|(_, v)| v.to_owned())
        });
        match header.or(query) {
            Some(key) if key == self.api_key => None,
            Some(_) => Some(error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                vec![
                    json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                           "reason": "API_KEY_INVALID",
                           "domain": "googleapis.com",
                           "metadata": {"service": "generativelanguage.googleapis.com"}}),
                    json!({"@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                           "locale": "en-US",
                           "message": "API key not valid. Please pass a valid API key."}),
                ],
            )),
            None => Some(error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). \
                 Please use API Key or other form of API consumer identity to call this API.",
                Vec::new(),
            )),
        }
    }

    fn model_call(&self, ctx: &Ctx, parts: &Parts, body: &Bytes, model: &str, method: ModelMethod) -> Answer {
        let request = match reply::parse(body, method == ModelMethod::CountTokens) {
            Ok(r) => r,
            Err(message) => return error(400, "INVALID_ARGUMENT", &message, Vec::new()).into(),
        };
        if method == ModelMethod::CountTokens {
            let total = prompt_tokens_for_body_len(body.len());
            return json_response(
                StatusCode::OK,
                &json!({"totalTokens": total,
                        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}),
            )
            .into();
        }
        let scenario = match header_scenario(parts).or(request.marker.clone()) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(name)) => {
                return error(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("fake-gemini: unknown scenario {name:?}"),
                    Vec::new(),
                )
                .into();
            }
        };
        let stream = method == ModelMethod::Stream;
        if let Some(response) = scenario_error(scenario, stream, model) {
            return response.into();
        }
        let sse = parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
        let mut answer = reply::answer(ctx, &request, model, body.len(), scenario, stream, sse);
        if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
            answer.response.headers_mut().insert("x-fake-request-id", v);
        }
        answer
    }
}

/// The error response of a status scenario, if `scenario` is one.
fn scenario_error(scenario: Option<Scenario>, stream: bool, model: &str) -> Option<Response<FakeBody>> {
    let quota = |id: &str, retry: bool| {
        let mut details = vec![
            json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                   "violations": [{
                       "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                       "quotaId": id,
                       "quotaDimensions": {"location": "global", "model": model},
                       "quotaValue": "10"}]}),
            json!({"@type": "type.googleapis.com/google.rpc.Help",
                   "links": [{"description": "Learn more about Gemini API quotas",
                              "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}),
        ];
        let mut message = format!(
            "You exceeded your current quota, please check your plan and billing details. For more \
             information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n\
             * Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, \
             limit: 10, model: {model}"
        );
        if retry {
            details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay": format!("{RETRY_DELAY_SECS}s")}));
            message.push_str(&format!("\nPlease retry in {RETRY_DELAY_SECS}.0s."));
        }
        error(429, "RESOURCE_EXHAUSTED", &message, details)
    };
    let code = match scenario? {
        Scenario::Status(code) => code,
        Scenario::Status429NoRetryAfter => {
            return Some(error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                Vec::new(),
            ));
        }
        Scenario::InsufficientQuota => {
            return Some(quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier", false));
        }
        Scenario::ErrorMidstream if !stream => 500,
        _ => return None,
    };
    Some(match code {
        400 => error(
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
            Vec::new(),
        ),
        401 => error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            Vec::new(),
        ),
        403 => error(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission",
            Vec::new(),
        ),
        404 => error(
            404,
            "NOT_FOUND",
            &format!(
                "models/{model} is not found for API version v1beta, or is not supported for \
                 generateContent. Call ListModels to see the list of available models and their \
                 supported methods."
            ),
            Vec::new(),
        ),
        413 => error(
            413,
            "INVALID_ARGUMENT",
            "Request payload size exceeds the limit: 20971520 bytes.",
            Vec::new(),
        ),
        429 => quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", true),
        500 => error(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guides/troubleshooting",
            Vec::new(),
        ),
        502 => error(502, "UNAVAILABLE", "Bad Gateway", Vec::new()),
        503 | 529 => error(
            code,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
            Vec::new(),
        ),
        504 => error(
            504,
            "DEADLINE_EXCEEDED",
            "Deadline expired before operation could complete.",
            Vec::new(),
        ),
        _ => error(code, "UNKNOWN", &format!("fake-gemini status {code}"), Vec::new()),
    })
}

fn models(id: Option<&str>) -> Response<FakeBody> {
    let model = |id: &str| {
        json!({
            "name": format!("models/{id}"),
            "version": "001",
            "displayName": id,
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 65_536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
            "thinking": true,
        })
    };
    match id {
        None => json_response(
            StatusCode::OK,
            &json!({"models": MODELS.iter().map(|m| model(m)).collect::<Vec<_>>()}),
        ),
        Some(id) if MODELS.contains(&id) => json_response(StatusCode::OK, &model(id)),
        Some(id) => error(404, "NOT_FOUND", &format!("models/{id} is not found"), Vec::new()),
    }
}

/// Google's error response: `{"error":{"code","message","status","details"?}}`.
pub(crate) fn error(status: u16, kind: &str, message: &str, details: Vec<Value>) -> Response<FakeBody> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error_json(status, kind, message, details),
    )
}

/// The body of [`error`] (also sent inside a stream by scenario `error-midstream`).
pub(crate) fn error_json(status: u16, kind: &str, message: &str, details: Vec<Value>) -> Value {
    let mut error = json!({"code": status, "message": message, "status": kind});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    json!({"error": error})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        assert!(matches!(
            parse_route(&post, "/v1beta/models/gemini-2.5-pro:streamGenerateContent"),
            Route::Model {
                model: "gemini-2.5-pro",
                method: ModelMethod::Stream,
                vertex: false
            }
        ));
        assert!(matches!(
            parse_route(
                &post,
                "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"
            ),
            Route::Model {
                model: "gemini-2.5-pro",
                method: ModelMethod::Generate,
                vertex: true
            }
        ));
        assert!(matches!(
            parse_route(&post, "/v1beta/models/m:countTokens"),
            Route::Model {
                method: ModelMethod::CountTokens,
                ..
            }
        ));
        assert!(matches!(
            parse_route(&Method::GET, "/v1beta/models"),
            Route::List(None)
        ));
        assert!(matches!(
            parse_route(&Method::GET, "/v1beta/models/m"),
            Route::List(Some("m"))
        ));
        for bad in [
            "/v1beta/models/m:nope",
            "/v1beta/models/:generateContent",
            "/v1beta/models/a/b:generateContent",
            "/v1/projects/p/locations/r/publishers/other/models/m:generateContent",
            "/v1beta/modelsx",
            "/",
        ] {
            assert!(matches!(parse_route(&post, bad), Route::Unknown), "{bad}");
        }
    }
}
