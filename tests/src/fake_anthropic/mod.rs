//! A faithful, fast fake of the Anthropic Messages API upstream.
//!
//! [`FakeAnthropic::start`] binds a hyper 1 HTTP/1.1 server (keep-alive, `TCP_NODELAY`) that
//! speaks the Messages API wire format: `POST /v1/messages` (JSON or SSE), `POST
//! /v1/messages/count_tokens`, `GET /v1/models`, `HEAD /` and `HEAD /api/hello`. Every request is
//! recorded (bounded by [`FakeConfig::max_recorded`], or off with [`FakeConfig::record`]) with
//! the usage object the fake returned, so tests can compare what a proxy counted.
//!
//! The same server also speaks Amazon Bedrock's InvokeModel wire format for benchmarks: `POST
//! /model/{id}/invoke` and `/invoke-with-response-stream` (an AWS event stream), see
//! [`bedrock`]. Those paths need a SigV4-shaped `authorization`, not `x-api-key`.
//!
//! # Deterministic behaviour
//!
//! * Auth: `x-api-key` must equal [`FakeConfig::api_key`] (else 401 `authentication_error`);
//!   `anthropic-version` is required on `/v1/messages*` (else 400 `invalid_request_error`).
//! * Usage: total input tokens = request body length / 4 (see [`input_tokens_for_body_len`]),
//!   all uncached (`input_tokens`) except in scenario `cache`, where they are split into cache
//!   reads (1/2), 5-minute cache writes (1/4), 1-hour cache writes (1/8) and uncached input (the
//!   rest). Output tokens = whitespace-separated words of the reply text, or
//!   [`TOOL_USE_OUTPUT_TOKENS`] for the Bash tool call.
//! * Reply: [`DEFAULT_REPLY`]; `Tool said: <tool_result text, trimmed>` when the last user message
//!   carries a `tool_result`; a `tool_use` of the `Bash` tool (`echo TOOL_OK`) when the last
//!   non-`<system-reminder>` text of the last user message contains [`TOOL_TRIGGER`] and the
//!   request declares a tool named `Bash`.
//! * Scenarios ([`Scenario`]): chosen by the [`SCENARIO_HEADER`] request header, or by a
//!   `[[scenario:NAME]]` marker in the text of the last user message (the header wins).
//!
//! # Control endpoints
//!
//! `GET /_fake/requests` returns the recorded requests as a JSON array ([`RecordedRequest`]
//! serializes its body as a UTF-8 string) and `POST /_fake/clear` empties the log. They are not
//! recorded themselves and need no key.

pub mod bedrock;
mod body;
mod reply;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use body::{BoxError, FakeBody};
use reply::{Ids, Invalid, MessagesRequest, Reply, StreamShape, Tokens};

/// The reply text when nothing more specific applies.
pub const DEFAULT_REPLY: &str = "Hello from fake-anthropic.";

/// Text that, in the last user prompt of a request declaring a `Bash` tool, makes the fake answer
/// with a Bash `tool_use` block running `echo TOOL_OK`.
pub const TOOL_TRIGGER: &str = "run echo TOOL_OK";

/// Marker that, anywhere in the last user prompt, makes the fake answer with a `tool_use` block
/// calling the named tool, declared or not: `[[tool_use:NAME]]` (input `{}`) or
/// `[[tool_use:NAME:{"json":"input"}]]`.
pub const TOOL_USE_MARKER: &str = "[[tool_use:";

/// `output_tokens` reported for the Bash `tool_use` reply.
pub const TOOL_USE_OUTPUT_TOKENS: u64 = 24;

/// Request header selecting a [`Scenario`] by name.
pub const SCENARIO_HEADER: &str = "x-fake-scenario";

/// Largest accepted request body (the real API's 32 MB limit); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Approximate size in bytes of the reply text of scenario [`Scenario::Big`].
pub const BIG_REPLY_BYTES: usize = reply::BIG_REPLY_BYTES;

/// Approximate size in bytes of the reply text of scenario [`Scenario::HugeJson`].
pub const HUGE_REPLY_BYTES: usize = reply::HUGE_REPLY_BYTES;

/// `retry-after` seconds sent with the `status-429` scenario.
pub const RETRY_AFTER_SECS: u64 = 7;

/// Models listed by `GET /v1/models`: (id, display name, max input tokens, max output tokens).
pub const MODELS: [(&str, &str, u64, u64); 3] = [
    ("claude-opus-4-8", "Claude Opus 4.8", 200_000, 64_000),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", 200_000, 64_000),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", 200_000, 64_000),
];

/// The message of the `status-400` scenario (Claude Code matches "prompt is too long").
pub const PROMPT_TOO_LONG: &str = "prompt is too long: 250000 tokens > 200000 maximum";

/// Total input tokens the fake attributes to a request body of `len` bytes (`len / 4`).
pub fn input_tokens_for_body_len(len: usize) -> u64 {
    (len / 4) as u64
}

/// The text of the [`Scenario::Big`] reply (~200 KB, multi-byte UTF-8 included, starting with
/// `BIG_REPLY_BEGIN` and ending with `BIG_REPLY_END`).
pub fn big_reply_text() -> &'static str {
    reply::big_reply_text()
}

/// The usage object the fake returns for a request body of `body_len` bytes whose reply has
/// `output_tokens` output tokens; `cache` selects the split of scenario [`Scenario::Cache`].
/// This is exactly what ends up in [`RecordedRequest::usage`] for complete replies.
pub fn expected_usage(body_len: usize, cache: bool, output_tokens: u64) -> Value {
    Tokens::new(body_len, cache, output_tokens).usage(output_tokens)
}

/// Behaviours selectable per request with the [`SCENARIO_HEADER`] header or a
/// `[[scenario:NAME]]` marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// `error-midstream`: 200 SSE with message_start, ping, content_block_start, one delta, then
    /// `event: error` (`overloaded_error`) and a clean end of the body. Non-streaming requests get
    /// 529 `overloaded_error`.
    ErrorMidstream,
    /// `slow`: SSE with [`FakeConfig::drip_delay`] between events and an extra `ping` after every
    /// delta, held after the first event while [`FakeConfig::hold`] has no permit.
    /// Non-streaming requests are answered after one `drip_delay`.
    Slow,
    /// `status-400`: 400 `invalid_request_error` [`PROMPT_TOO_LONG`].
    Status400,
    /// `status-429`: 429 `rate_limit_error` with `retry-after: 7` and `anthropic-ratelimit-*`.
    Status429,
    /// `status-500`: 500 `api_error`.
    Status500,
    /// `status-529`: 529 `overloaded_error`.
    Status529,
    /// `cache`: usage with nonzero cache reads, 5-minute and 1-hour cache writes.
    Cache,
    /// `cut`: 200 SSE (message_start, ping, content_block_start, one delta) then the connection is
    /// closed without the terminating chunk, message_delta or message_stop. Non-streaming
    /// requests get half of the JSON body, then the cut.
    Cut,
    /// `big`: a reply of ~[`BIG_REPLY_BYTES`] streamed in many deltas of 16 words. With a
    /// `[[tool_use:NAME]]` marker, that text block comes first, then the `tool_use` block.
    Big,
    /// `big-cut`: the `big` reply streamed through its last `content_block_stop`, then the
    /// connection is closed before `message_delta` (the final usage) and `message_stop`.
    /// Non-streaming requests get half of the `big` JSON body, then the cut.
    BigCut,
    /// `slow-headers`: the answer (of any other kind) starts only after
    /// [`FakeConfig::header_delay`]: the upstream is silent before its response headers.
    SlowHeaders,
    /// `huge-json`: a non-streaming message whose text is ~[`HUGE_REPLY_BYTES`] (over 16 MiB),
    /// complete with its usage. Streaming requests get the `big` stream.
    HugeJson,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 12] = [
        Scenario::ErrorMidstream,
        Scenario::Slow,
        Scenario::Status400,
        Scenario::Status429,
        Scenario::Status500,
        Scenario::Status529,
        Scenario::Cache,
        Scenario::Cut,
        Scenario::Big,
        Scenario::BigCut,
        Scenario::SlowHeaders,
        Scenario::HugeJson,
    ];

    /// The wire name (`error-midstream`, `slow`, `status-400`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ErrorMidstream => "error-midstream",
            Scenario::Slow => "slow",
            Scenario::Status400 => "status-400",
            Scenario::Status429 => "status-429",
            Scenario::Status500 => "status-500",
            Scenario::Status529 => "status-529",
            Scenario::Cache => "cache",
            Scenario::Cut => "cut",
            Scenario::Big => "big",
            Scenario::BigCut => "big-cut",
            Scenario::SlowHeaders => "slow-headers",
            Scenario::HugeJson => "huge-json",
        }
    }

    /// Parses a wire name (case-insensitive, surrounding whitespace ignored).
    pub fn from_name(name: &str) -> Option<Scenario> {
        let name = name.trim();
        Scenario::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The `[[scenario:NAME]]` marker selecting this scenario from message text.
    pub fn marker(self) -> String {
        format!("[[scenario:{}]]", self.name())
    }
}

/// Configuration of a [`FakeAnthropic`].
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Address to bind; `None` binds `127.0.0.1:0` (a free port).
    pub addr: Option<SocketAddr>,
    /// The provider key expected in `x-api-key`; anything else gets 401 `authentication_error`.
    pub api_key: String,
    /// Delay between SSE events in scenario `slow`.
    pub drip_delay: Duration,
    /// Record requests (turn off for benchmarks).
    pub record: bool,
    /// Keep at most this many recorded requests (the oldest are dropped first).
    pub max_recorded: usize,
    /// When set, every `slow` stream sends its first event, then waits for one permit of this
    /// semaphore before the rest: a test holds the upstream mid-stream, looks at what reached
    /// its client, and releases it with `add_permits(1)`.
    pub hold: Option<Arc<tokio::sync::Semaphore>>,
    /// How long scenario `slow-headers` waits before answering.
    pub header_delay: Duration,
}

impl FakeConfig {
    /// Defaults with the given expected provider key.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            ..Self::default()
        }
    }
}

impl Default for FakeConfig {
    /// `127.0.0.1:0`, key `sk-ant-fake-upstream-key`, 50 ms drip delay, recording on, at most
    /// 4096 recorded requests, no hold, 3 s header delay.
    fn default() -> Self {
        Self {
            addr: None,
            api_key: "sk-ant-fake-upstream-key".to_owned(),
            drip_delay: Duration::from_millis(50),
            record: true,
            max_recorded: 4096,
            hold: None,
            header_delay: Duration::from_secs(3),
        }
    }
}

/// One request received by the fake, with what it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method (`POST`, `HEAD`, ...).
    pub method: String,
    /// Path without the query (`/v1/messages`).
    pub path: String,
    /// Raw query string without `?` (`beta=true`), if any.
    pub query: Option<String>,
    /// Request headers in received order; names are lower-case, values lossily UTF-8 decoded.
    pub headers: Vec<(String, String)>,
    /// Request body (serialized as a UTF-8 string, lossily, by `/_fake/requests`).
    #[serde(with = "body_as_string")]
    pub body: Bytes,
    /// Status code the fake answered with.
    pub response_status: u16,
    /// The usage object the fake returned: the `usage` of a JSON message, or for a stream the
    /// cumulative usage (message_start usage overwritten by message_delta usage). For streams
    /// that never reach message_delta (`error-midstream`, `cut`, `big-cut`) the message_start usage
    /// (`output_tokens: 1`). `None` for errors and non-message endpoints.
    pub usage: Option<Value>,
    /// The `request-id` header of the fake's response (`req_...`).
    pub request_id: String,
}

impl RecordedRequest {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

mod body_as_string {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(body))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        String::deserialize(d).map(Bytes::from)
    }
}

/// A running fake upstream. Dropping it stops the server and closes its connections.
pub struct FakeAnthropic {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeAnthropic {
    /// Binds `config.addr` (default `127.0.0.1:0`) and starts serving on the current Tokio
    /// runtime.
    pub async fn start(config: FakeConfig) -> anyhow::Result<FakeAnthropic> {
        let bind = config
            .addr
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("fake-anthropic: cannot bind {bind}"))?;
        let addr = listener.local_addr()?;
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ u32::from(addr.port());
        let shared = Arc::new(Shared {
            config,
            log: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            nonce,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FakeAnthropic { addr, shared, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` (no trailing slash, no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log().iter().cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.shared.log().clear();
    }

    /// The configuration in use.
    pub fn config(&self) -> &FakeConfig {
        &self.shared.config
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

struct Shared {
    config: FakeConfig,
    log: Mutex<VecDeque<RecordedRequest>>,
    next_id: AtomicU64,
    nonce: u32,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding the lock cannot corrupt a VecDeque of owned values.
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}fake{:08x}{n:012x}", self.nonce)
    }

    fn record(&self, entry: RecordedRequest) {
        let max = self.config.max_recorded;
        if max == 0 {
            return;
        }
        let mut log = self.log();
        while log.len() >= max {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A response plus the usage it carries.
struct Outcome {
    response: Response<FakeBody>,
    usage: Option<Value>,
}

impl From<Response<FakeBody>> for Outcome {
    fn from(response: Response<FakeBody>) -> Self {
        Outcome {
            response,
            usage: None,
        }
    }
}

async fn handle(shared: &Shared, req: http::Request<Incoming>) -> Response<FakeBody> {
    let (parts, body) = req.into_parts();

    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/_fake/requests") => {
            let log = shared.requests_json();
            return json_response(StatusCode::OK, log, None);
        }
        (&Method::POST, "/_fake/clear") => {
            let cleared = {
                let mut log = shared.log();
                let n = log.len();
                log.clear();
                n
            };
            return json_response(StatusCode::OK, json!({"cleared": cleared}), None);
        }
        _ => {}
    }

    let request_id = shared.id("req_");
    let (body, outcome) = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => {
            let body = collected.to_bytes();
            let outcome = route(shared, &parts, &body, &request_id).await;
            (body, outcome)
        }
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => (
            Bytes::new(),
            error(
                413,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
                &request_id,
            )
            .into(),
        ),
        Err(e) => (
            Bytes::new(),
            error(
                400,
                "invalid_request_error",
                &format!("Could not read the request body: {e}"),
                &request_id,
            )
            .into(),
        ),
    };

    if shared.config.record {
        shared.record(RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            response_status: outcome.response.status().as_u16(),
            usage: outcome.usage,
            request_id,
        });
    }
    outcome.response
}

impl Shared {
    fn requests_json(&self) -> Value {
        let log = self.log();
        serde_json::to_value(&*log).unwrap_or_else(|_| json!([]))
    }
}

async fn route(shared: &Shared, parts: &Parts, body: &Bytes, request_id: &str) -> Outcome {
    let path = parts.uri.path();
    match (&parts.method, path) {
        (&Method::HEAD, "/" | "/api/hello") => {
            let mut response = Response::new(FakeBody::empty());
            set_request_id(&mut response, request_id);
            response.into()
        }
        (&Method::POST, "/v1/messages") => messages(shared, parts, body, request_id).await,
        (&Method::POST, p) if bedrock::is_bedrock_path(p) => {
            bedrock::invoke(shared, parts, body, request_id).await
        }
        (&Method::POST, "/v1/messages/count_tokens") => count_tokens(shared, parts, body, request_id).into(),
        (&Method::GET, "/v1/models") => models(shared, parts, None, request_id).into(),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            models(shared, parts, Some(id), request_id).into()
        }
        (method, path) => error(
            404,
            "not_found_error",
            &format!("Not Found: {method} {path}"),
            request_id,
        )
        .into(),
    }
}

/// Checks `x-api-key` (and `anthropic-version` when `need_version`); returns the error response
/// to send if they are wrong.
fn header_error(
    shared: &Shared,
    parts: &Parts,
    need_version: bool,
    request_id: &str,
) -> Option<Response<FakeBody>> {
    match parts.headers.get("x-api-key") {
        None => Some(error(
            401,
            "authentication_error",
            "x-api-key header is required",
            request_id,
        )),
        Some(key) if key.as_bytes() != shared.config.api_key.as_bytes() => Some(error(
            401,
            "authentication_error",
            "invalid x-api-key",
            request_id,
        )),
        Some(_) if need_version && !parts.headers.contains_key("anthropic-version") => Some(error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
            request_id,
        )),
        Some(_) => None,
    }
}

async fn messages(shared: &Shared, parts: &Parts, body: &Bytes, request_id: &str) -> Outcome {
    if let Some(response) = header_error(shared, parts, true, request_id) {
        return response.into();
    }
    let header_scenario = match parts.headers.get(SCENARIO_HEADER) {
        None => None,
        Some(v) => {
            let name = String::from_utf8_lossy(v.as_bytes());
            match Scenario::from_name(&name) {
                Some(s) => Some(s),
                None => return unknown_scenario(&name, request_id).into(),
            }
        }
    };
    let request: MessagesRequest = match reply::parse_messages_request(body, true) {
        Ok(r) => r,
        Err(Invalid(message)) => {
            return error(400, "invalid_request_error", &message, request_id).into();
        }
    };
    let scenario = match (header_scenario, &request.marker) {
        (Some(s), _) => Some(s),
        (None, Some(Ok(s))) => Some(*s),
        (None, Some(Err(name))) => return unknown_scenario(name, request_id).into(),
        (None, None) => None,
    };

    match scenario {
        Some(Scenario::Status400) => {
            return error(400, "invalid_request_error", PROMPT_TOO_LONG, request_id).into();
        }
        Some(Scenario::Status429) => return rate_limited(request_id).into(),
        Some(Scenario::Status500) => {
            return error(500, "api_error", "Internal server error", request_id).into();
        }
        Some(Scenario::Status529) => {
            return error(529, "overloaded_error", "Overloaded", request_id).into();
        }
        Some(Scenario::ErrorMidstream) if !request.stream => {
            return error(529, "overloaded_error", "Overloaded", request_id).into();
        }
        _ => {}
    }

    if scenario == Some(Scenario::SlowHeaders) {
        tokio::time::sleep(shared.config.header_delay).await;
    }
    let big = matches!(scenario, Some(Scenario::Big | Scenario::BigCut))
        || (scenario == Some(Scenario::HugeJson) && request.stream);
    let long_text = if big {
        Some(reply::big_reply_text())
    } else if scenario == Some(Scenario::HugeJson) {
        Some(reply::huge_reply_text())
    } else {
        None
    };
    let reply = match (long_text, request.reply) {
        (Some(text), Reply::ToolUse { name, input }) => Reply::TextThenTool {
            text: std::borrow::Cow::Borrowed(text),
            name,
            input,
        },
        (Some(text), _) => Reply::Text(std::borrow::Cow::Borrowed(text)),
        (None, reply) => reply,
    };
    let output = reply::output_tokens(&reply);
    let tokens = Tokens::new(body.len(), scenario == Some(Scenario::Cache), output);
    let message_id = shared.id("msg_");
    let tool_use_id = if matches!(reply, Reply::BashToolUse | Reply::ToolUse { .. }) {
        shared.id("toolu_")
    } else {
        String::new()
    };
    let ids = Ids {
        message_id: &message_id,
        tool_use_id: &tool_use_id,
    };

    if request.stream {
        let shape = match scenario {
            Some(Scenario::ErrorMidstream) => StreamShape::ErrorAfterFirstDelta,
            Some(Scenario::Cut) => StreamShape::CutAfterFirstDelta,
            Some(Scenario::BigCut) => StreamShape::CutBeforeMessageDelta,
            Some(Scenario::Slow) => StreamShape::ExtraPings,
            _ => StreamShape::Complete,
        };
        let events = reply::sse_events(&request.model, &reply, &tokens, &ids, shape, big);
        let mut body = FakeBody::chunks(events);
        if matches!(
            shape,
            StreamShape::CutAfterFirstDelta | StreamShape::CutBeforeMessageDelta
        ) {
            body = body.then_cut();
        }
        if shape == StreamShape::ExtraPings {
            body = body.dripped(shared.config.drip_delay);
            if let Some(gate) = &shared.config.hold {
                body = body.held_after_first(gate.clone());
            }
        }
        let usage = match shape {
            StreamShape::Complete | StreamShape::ExtraPings => tokens.usage(tokens.output),
            StreamShape::ErrorAfterFirstDelta
            | StreamShape::CutAfterFirstDelta
            | StreamShape::CutBeforeMessageDelta => tokens.usage(1),
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        set_request_id(&mut response, request_id);
        return Outcome {
            response,
            usage: Some(usage),
        };
    }

    let message = reply::message_json(&request.model, &reply, &tokens, &ids);
    if scenario == Some(Scenario::Slow) {
        tokio::time::sleep(shared.config.drip_delay).await;
    }
    if matches!(scenario, Some(Scenario::Cut | Scenario::BigCut)) {
        let bytes = Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
        let half = bytes.slice(..bytes.len() / 2);
        let mut response = Response::new(FakeBody::chunks(vec![half]).then_cut());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        set_request_id(&mut response, request_id);
        return response.into();
    }
    Outcome {
        response: json_response(StatusCode::OK, message, Some(request_id)),
        usage: Some(tokens.usage(tokens.output)),
    }
}

fn unknown_scenario(name: &str, request_id: &str) -> Response<FakeBody> {
    let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
    error(
        400,
        "invalid_request_error",
        &format!(
            "fake-anthropic: unknown scenario {name:?} (known: {})",
            known.join(", ")
        ),
        request_id,
    )
}

fn count_tokens(shared: &Shared, parts: &Parts, body: &Bytes, request_id: &str) -> Response<FakeBody> {
    if let Some(response) = header_error(shared, parts, true, request_id) {
        return response;
    }
    if let Err(Invalid(message)) = reply::parse_messages_request(body, false) {
        return error(400, "invalid_request_error", &message, request_id);
    }
    json_response(
        StatusCode::OK,
        json!({"input_tokens": input_tokens_for_body_len(body.len())}),
        Some(request_id),
    )
}

fn model_json(entry: &(&str, &str, u64, u64)) -> Value {
    let (id, display_name, max_input_tokens, max_tokens) = *entry;
    json!({
        "type": "model",
        "id": id,
        "display_name": display_name,
        "created_at": "2026-01-01T00:00:00Z",
        "max_input_tokens": max_input_tokens,
        "max_tokens": max_tokens,
    })
}

fn models(shared: &Shared, parts: &Parts, id: Option<&str>, request_id: &str) -> Response<FakeBody> {
    if let Some(response) = header_error(shared, parts, false, request_id) {
        return response;
    }
    match id {
        None => {
            let data: Vec<Value> = MODELS.iter().map(model_json).collect();
            json_response(
                StatusCode::OK,
                json!({
                    "data": data,
                    "has_more": false,
                    "first_id": MODELS[0].0,
                    "last_id": MODELS[MODELS.len() - 1].0,
                }),
                Some(request_id),
            )
        }
        Some(id) => match MODELS.iter().find(|m| m.0 == id) {
            Some(entry) => json_response(StatusCode::OK, model_json(entry), Some(request_id)),
            None => error(404, "not_found_error", &format!("model: {id}"), request_id),
        },
    }
}

fn rate_limited(request_id: &str) -> Response<FakeBody> {
    let mut response = error(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per \
         minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see \
         the response headers for current usage. Please reduce the prompt length or the maximum \
         tokens requested, or try again later.",
        request_id,
    );
    let reset = rfc3339_after(RETRY_AFTER_SECS);
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    for (kind, limit, remaining) in [
        ("requests", 50u64, 0u64),
        ("tokens", 100_000, 0),
        ("input-tokens", 80_000, 0),
        ("output-tokens", 20_000, 0),
    ] {
        for (suffix, value) in [
            ("limit", HeaderValue::from(limit)),
            ("remaining", HeaderValue::from(remaining)),
            (
                "reset",
                HeaderValue::from_str(&reset).unwrap_or(HeaderValue::from_static("")),
            ),
        ] {
            if let Ok(name) =
                HeaderName::from_bytes(format!("anthropic-ratelimit-{kind}-{suffix}").as_bytes())
            {
                headers.insert(name, value);
            }
        }
    }
    response
}

/// An Anthropic error response: `{"type":"error","error":{..},"request_id":..}`.
fn error(status: u16, kind: &str, message: &str, request_id: &str) -> Response<FakeBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        status,
        json!({
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": request_id,
        }),
        Some(request_id),
    )
}

fn json_response(status: StatusCode, value: Value, request_id: Option<&str>) -> Response<FakeBody> {
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let mut response = Response::new(FakeBody::full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(id) = request_id {
        set_request_id(&mut response, id);
    }
    response
}

fn set_request_id(response: &mut Response<FakeBody>, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("request-id", v);
    }
}

/// RFC 3339 UTC timestamp `secs` seconds from now (`2026-01-01T00:00:07Z`).
fn rfc3339_after(secs: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + secs;
    let days = (now / 86_400) as i64;
    let rem = now % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn scenario_names_roundtrip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
        assert_eq!(Scenario::from_name(" CACHE "), Some(Scenario::Cache));
        assert_eq!(Scenario::from_name("nope"), None);
    }
}
