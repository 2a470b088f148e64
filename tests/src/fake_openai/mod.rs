//! A faithful, fast fake of the OpenAI API upstream (Responses and Chat Completions), in the
//! style of [`crate::fake_anthropic`].
//!
//! [`FakeOpenAi::start`] binds a hyper 1 HTTP/1.1 server that speaks OpenAI's wire format:
//! `POST /v1/responses` (JSON or SSE), `POST /v1/chat/completions` (JSON or SSE chunks) and
//! `GET /v1/models` (and `/v1/models/{id}`). Every request is recorded ([`RecordedRequest`], the
//! same type as the fake Anthropic's) with the usage object the fake returned.
//!
//! # Deterministic behaviour
//!
//! * Auth: `Authorization: Bearer <FakeOpenAiConfig::api_key>`, else 401 in OpenAI's error shape
//!   (`{"error":{"message","type","param","code"}}`, code `invalid_api_key` for a wrong key).
//! * Usage: input tokens = request body length / 4 (all uncached unless scenario `cache`: half
//!   cached), output tokens = words of the reply text or [`TOOL_CALL_OUTPUT_TOKENS`] for a tool
//!   call (plus [`REASONING_TOKENS`] of reasoning in scenario `reasoning`, counted inside
//!   `output_tokens` as OpenAI does).
//! * Reply: [`DEFAULT_REPLY`]; `Tool said: <output>` when the conversation ends with a tool result
//!   (`function_call_output` / a `tool` message; the output of Codex's `exec_command` is unwrapped
//!   to what the command printed); a call of the declared shell tool running `echo X` when the last
//!   user message contains [`TOOL_TRIGGER`] `X` (to the end of the line) and the request declares
//!   a shell tool ([`SHELL_TOOLS`]: Codex CLI 0.171 declares `exec_command`).
//! * Scenarios ([`Scenario`]): the [`SCENARIO_HEADER`] header, or a `[[scenario:NAME]]` marker in
//!   the text of the last user message (the header wins).
//!
//! # Control endpoints
//!
//! `GET /_fake/requests` returns the recorded requests as JSON, `POST /_fake/clear` forgets them.

mod reply;
pub(crate) mod server;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::fake_anthropic::FakeBody;
pub use crate::fake_anthropic::RecordedRequest;
use server::{Answer, Api, BoxFuture, Ctx, LogConfig, Server, json_response};

/// The reply text when nothing more specific applies.
pub const DEFAULT_REPLY: &str = "Hello from fake-openai.";

/// Text that, followed by the rest of a command line (`run echo TOOL_OK`), makes the fake call
/// the declared shell tool with `echo ...`.
pub const TOOL_TRIGGER: &str = "run echo";

/// Names of function tools the fake recognises as a shell, with their argument shapes:
/// `exec_command {cmd}` (Codex CLI 0.171), `shell_command {command: string}`, `shell {command:
/// [argv]}` (older Codex releases).
pub const SHELL_TOOLS: [&str; 3] = ["exec_command", "shell_command", "shell"];

/// `output_tokens` reported for a tool call reply.
pub const TOOL_CALL_OUTPUT_TOKENS: u64 = 24;

/// Reasoning tokens reported (inside `output_tokens`) in scenario `reasoning`.
pub const REASONING_TOKENS: u64 = 64;

/// Request header selecting a [`Scenario`] by name.
pub const SCENARIO_HEADER: &str = "x-fake-scenario";

/// Largest accepted request body; larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// `retry-after` seconds sent with `status-429` (and stated in its message).
pub const RETRY_AFTER_SECS: u64 = 7;

/// Models listed by `GET /v1/models`.
pub const MODELS: [&str; 4] = ["gpt-5", "gpt-5-codex", "gpt-5-mini", "gpt-4.1"];

/// Total input tokens the fake attributes to a request body of `len` bytes (`len / 4`).
pub fn input_tokens_for_body_len(len: usize) -> u64 {
    (len / 4) as u64
}

/// Behaviours selectable per request with the [`SCENARIO_HEADER`] header or a
/// `[[scenario:NAME]]` marker. The fake Gemini understands the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// `status-NNN` (400..=599): that status with the provider's error body for it. `status-429`
    /// is a rate limit with `retry-after: 7` (OpenAI) or a `RetryInfo` of 7 s (Gemini).
    Status(u16),
    /// `status-429-no-retry-after`: a rate limit without any retry hint.
    Status429NoRetryAfter,
    /// `insufficient-quota`: OpenAI's 429 `insufficient_quota` (out of credit, not a rate limit);
    /// for Gemini a 429 `RESOURCE_EXHAUSTED` for a per-day quota.
    InsufficientQuota,
    /// `cut`: a 200 stream that stops after its first text delta without the final event (the
    /// connection is closed). Non-streaming requests get half of the JSON body, then the cut.
    Cut,
    /// `error-midstream`: a 200 stream that, after its first text delta, reports an error
    /// (OpenAI: `response.failed` / an `error` chunk; Gemini: an error object in the stream).
    /// Non-streaming requests get 500.
    ErrorMidstream,
    /// `cache`: half of the input tokens are reported as cached.
    Cache,
    /// `reasoning`: the usage reports [`REASONING_TOKENS`] reasoning / thought tokens.
    Reasoning,
}

impl Scenario {
    /// Every scenario except the `status-NNN` family, plus the statuses measured in
    /// `e2e/captures/README.md`.
    pub const EXAMPLES: [Scenario; 17] = [
        Scenario::Status(400),
        Scenario::Status(401),
        Scenario::Status(403),
        Scenario::Status(404),
        Scenario::Status(413),
        Scenario::Status(429),
        Scenario::Status429NoRetryAfter,
        Scenario::InsufficientQuota,
        Scenario::Status(500),
        Scenario::Status(502),
        Scenario::Status(503),
        Scenario::Status(504),
        Scenario::Status(529),
        Scenario::Cut,
        Scenario::ErrorMidstream,
        Scenario::Cache,
        Scenario::Reasoning,
    ];

    /// The wire name (`status-429`, `cut`, ...).
    pub fn name(self) -> String {
        match self {
            Scenario::Status(code) => format!("status-{code}"),
            Scenario::Status429NoRetryAfter => "status-429-no-retry-after".into(),
            Scenario::InsufficientQuota => "insufficient-quota".into(),
            Scenario::Cut => "cut".into(),
            Scenario::ErrorMidstream => "error-midstream".into(),
            Scenario::Cache => "cache".into(),
            Scenario::Reasoning => "reasoning".into(),
        }
    }

    /// Parses a wire name (case-insensitive, surrounding whitespace ignored).
    pub fn from_name(name: &str) -> Option<Scenario> {
        let name = name.trim().to_ascii_lowercase();
        if let Some(code) = name.strip_prefix("status-") {
            if let Ok(code) = code.parse::<u16>() {
                return (400..=599).contains(&code).then_some(Scenario::Status(code));
            }
        }
        Scenario::EXAMPLES
            .into_iter()
            .find(|s| !matches!(s, Scenario::Status(_)) && s.name() == name)
    }

    /// The `[[scenario:NAME]]` marker selecting this scenario from message text.
    pub fn marker(self) -> String {
        format!("[[scenario:{}]]", self.name())
    }
}

/// Finds `[[scenario:NAME]]` in a text: `Err(name)` for an unknown name.
pub(crate) fn find_marker(text: &str) -> Option<Result<Scenario, String>> {
    const OPEN: &str = "[[scenario:";
    let start = text.find(OPEN)? + OPEN.len();
    let rest = &text[start..];
    let end = rest.find("]]")?;
    let name = rest[..end].trim();
    Some(Scenario::from_name(name).ok_or_else(|| name.to_owned()))
}

/// The scenario named by the [`SCENARIO_HEADER`] header: `Some(Err(name))` for an unknown name.
pub(crate) fn header_scenario(parts: &Parts) -> Option<Result<Scenario, String>> {
    let name = String::from_utf8_lossy(parts.headers.get(SCENARIO_HEADER)?.as_bytes()).into_owned();
    Some(Scenario::from_name(&name).ok_or(name))
}

/// Configuration of a [`FakeOpenAi`].
#[derive(Debug, Clone)]
pub struct FakeOpenAiConfig {
    /// Address to bind; `None` binds `127.0.0.1:0` (a free port).
    pub addr: Option<SocketAddr>,
    /// The provider key expected as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Record requests (turn off for benchmarks).
    pub record: bool,
    /// Keep at most this many recorded requests (the oldest are dropped first).
    pub max_recorded: usize,
}

impl FakeOpenAiConfig {
    /// Defaults with the given expected provider key.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            ..Self::default()
        }
    }
}

impl Default for FakeOpenAiConfig {
    /// `127.0.0.1:0`, key `sk-fake-openai-upstream-key`, recording on, at most 4096 requests.
    fn default() -> Self {
        Self {
            addr: None,
            api_key: "sk-fake-openai-upstream-key".to_owned(),
            record: true,
            max_recorded: 4096,
        }
    }
}

/// A running fake OpenAI upstream. Dropping it stops the server.
pub struct FakeOpenAi {
    server: Server,
    config: FakeOpenAiConfig,
}

impl FakeOpenAi {
    /// Binds `config.addr` (default `127.0.0.1:0`) and starts serving on the current Tokio
    /// runtime.
    pub async fn start(config: FakeOpenAiConfig) -> anyhow::Result<FakeOpenAi> {
        let log = LogConfig {
            record: config.record,
            max_recorded: config.max_recorded,
            max_body_bytes: MAX_BODY_BYTES,
        };
        let api = OpenAiApi {
            api_key: config.api_key.clone(),
        };
        let server = Server::start("fake-openai", config.addr, log, api).await?;
        Ok(FakeOpenAi { server, config })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://IP:PORT` (no trailing slash, no `/v1`).
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
    pub fn config(&self) -> &FakeOpenAiConfig {
        &self.config
    }
}

struct OpenAiApi {
    api_key: String,
}

impl Api for OpenAiApi {
    fn route<'a>(&'a self, ctx: &'a Ctx, parts: &'a Parts, body: &'a Bytes) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let mut answer = self.route_inner(ctx, parts, body);
            if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
                answer.response.headers_mut().insert("x-request-id", v);
            }
            answer
        })
    }

    fn body_error(&self, _ctx: &Ctx, status: u16, message: &str) -> Response<FakeBody> {
        error(status, "invalid_request_error", None, message)
    }
}

impl OpenAiApi {
    fn route_inner(&self, ctx: &Ctx, parts: &Parts, body: &Bytes) -> Answer {
        let path = parts.uri.path();
        let api = match (&parts.method, path) {
            (&Method::POST, "/v1/responses") => Some(reply::Wire::Responses),
            (&Method::POST, "/v1/chat/completions") => Some(reply::Wire::Chat),
            (&Method::GET, p) if p == "/v1/models" || p.starts_with("/v1/models/") => None,
            (method, path) => {
                return error(
                    404,
                    "invalid_request_error",
                    None,
                    &format!("Invalid URL ({method} {path})"),
                )
                .into();
            }
        };
        if let Some(response) = self.auth_error(parts) {
            return response.into();
        }
        match api {
            Some(wire) => self.generate(ctx, parts, body, wire),
            None => models(path.strip_prefix("/v1/models/")).into(),
        }
    }

    fn auth_error(&self, parts: &Parts) -> Option<Response<FakeBody>> {
        let header = parts.headers.get(http::header::AUTHORIZATION);
        let token = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        match token {
            Some(t) if t.trim() == self.api_key => None,
            Some(t) => {
                let shown: String = t.chars().take(4).collect();
                let tail: String = t
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Some(error(
                    401,
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    &format!(
                        "Incorrect API key provided: {shown}****{tail}. You can find your API key at \
                         https://platform.openai.com/account/api-keys."
                    ),
                ))
            }
            None => Some(error(
                401,
                "invalid_request_error",
                None,
                "You didn't provide an API key. You need to provide your API key in an Authorization \
                 header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password \
                 field (with blank username) if you're accessing the API from your browser and are \
                 prompted for a username and password. You can obtain an API key from \
                 https://platform.openai.com/account/api-keys.",
            )),
        }
    }

    fn generate(&self, ctx: &Ctx, parts: &Parts, body: &Bytes, wire: reply::Wire) -> Answer {
        let request = match reply::parse(body, wire) {
            Ok(r) => r,
            Err(message) => return error(400, "invalid_request_error", None, &message).into(),
        };
        let scenario = match header_scenario(parts).or(request.marker.clone()) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(name)) => {
                return error(
                    400,
                    "invalid_request_error",
                    None,
                    &format!("fake-openai: unknown scenario {name:?}"),
                )
                .into();
            }
        };
        if let Some(response) = scenario_error(scenario, request.stream, &request.model) {
            return response.into();
        }
        reply::answer(ctx, &request, body.len(), scenario, wire)
    }
}

/// The error response of a status scenario, if `scenario` is one.
fn scenario_error(scenario: Option<Scenario>, stream: bool, model: &str) -> Option<Response<FakeBody>> {
    let code = match scenario? {
        Scenario::Status(code) => code,
        Scenario::Status429NoRetryAfter => return Some(rate_limited(model, false)),
        Scenario::InsufficientQuota => {
            return Some(error(
                429,
                "insufficient_quota",
                Some("insufficient_quota"),
                "You exceeded your current quota, please check your plan and billing details. For \
                 more information on this error, read the docs: \
                 https://platform.openai.com/docs/guides/error-codes/api-errors.",
            ));
        }
        Scenario::ErrorMidstream if !stream => 500,
        _ => return None,
    };
    Some(match code {
        400 => error(
            400,
            "invalid_request_error",
            None,
            "Invalid request (fake-openai scenario status-400).",
        ),
        401 => error(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
        ),
        403 => error(
            403,
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
            "Country, region, or territory not supported",
        ),
        404 => error(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            &format!("The model `{model}` does not exist or you do not have access to it."),
        ),
        413 => error(
            413,
            "invalid_request_error",
            None,
            "Request too large: the request body exceeds the maximum size.",
        ),
        429 => rate_limited(model, true),
        500 => error(
            500,
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        502 => error(502, "server_error", Some("bad_gateway"), "Bad gateway."),
        503 | 529 => error(
            code,
            "server_error",
            None,
            "The engine is currently overloaded, please try again later.",
        ),
        _ => error(code, "server_error", None, &format!("fake-openai status {code}")),
    })
}

/// OpenAI's 429 `rate_limit_exceeded`, with `retry-after` and `x-ratelimit-*` when `hint`.
fn rate_limited(model: &str, hint: bool) -> Response<FakeBody> {
    let message = if hint {
        format!(
            "Rate limit reached for {model} in organization org-fake on tokens per min (TPM): \
             Limit 30000, Used 30000, Requested 1000. Please try again in {RETRY_AFTER_SECS}s. Visit \
             https://platform.openai.com/account/rate-limits to learn more."
        )
    } else {
        format!(
            "Rate limit reached for {model} in organization org-fake on requests per min (RPM): \
             Limit 50, Used 50, Requested 1."
        )
    };
    let mut response = error(429, "requests", Some("rate_limit_exceeded"), &message);
    if hint {
        let headers = response.headers_mut();
        headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        for (name, value) in [
            ("x-ratelimit-limit-requests", "50".to_owned()),
            ("x-ratelimit-remaining-requests", "0".to_owned()),
            ("x-ratelimit-reset-requests", format!("{RETRY_AFTER_SECS}s")),
            ("x-ratelimit-limit-tokens", "30000".to_owned()),
            ("x-ratelimit-remaining-tokens", "0".to_owned()),
            ("x-ratelimit-reset-tokens", format!("{RETRY_AFTER_SECS}s")),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    }
    response
}

fn models(id: Option<&str>) -> Response<FakeBody> {
    let model =
        |id: &str| json!({"id": id, "object": "model", "created": 1_767_225_600, "owned_by": "system"});
    match id {
        None => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": MODELS.iter().map(|m| model(m)).collect::<Vec<_>>()}),
        ),
        Some(id) if MODELS.contains(&id) => json_response(StatusCode::OK, &model(id)),
        Some(id) => error(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            &format!("The model `{id}` does not exist or you do not have access to it."),
        ),
    }
}

/// An OpenAI error response: `{"error":{"message","type","param":null,"code"}}`.
pub(crate) fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Response<FakeBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// The usage object of a reply, as `response.completed` / a chat usage chunk carries it.
pub(crate) fn usage_json(wire: reply::Wire, input: u64, cached: u64, output: u64, reasoning: u64) -> Value {
    match wire {
        reply::Wire::Responses => json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input + output,
        }),
        reply::Wire::Chat => json!({
            "prompt_tokens": input,
            "completion_tokens": output,
            "total_tokens": input + output,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_roundtrip() {
        for s in Scenario::EXAMPLES {
            assert_eq!(Scenario::from_name(&s.name()), Some(s), "{s:?}");
        }
        assert_eq!(Scenario::from_name(" STATUS-418 "), Some(Scenario::Status(418)));
        assert_eq!(Scenario::from_name("status-200"), None);
        assert_eq!(Scenario::from_name("status-x"), None);
        assert_eq!(Scenario::from_name("nope"), None);
        assert_eq!(find_marker("a [[scenario:cut]] b"), Some(Ok(Scenario::Cut)));
        assert_eq!(find_marker("[[scenario:nope]]"), Some(Err("nope".into())));
        assert_eq!(find_marker("[[scenario:cut"), None);
    }
}
