//! The MCP gateway: `/mcp` (also `/anthropic/mcp`), a Streamable HTTP endpoint that
//! aggregates the upstream MCP servers of the policy behind one session, filtered per
//! virtual key.
//!
//! - **Auth**: the virtual key from `Authorization: Bearer` or `x-api-key`, as on the
//!   Anthropic routes; a bad key is HTTP 401 (disabled or expired: 403) with a JSON-RPC error
//!   body. The key never goes upstream: each server gets its own credential as a Bearer token.
//! - **Sessions** (2025-06-18, 2025-11-25): `initialize` creates a session bound to the key
//!   (`Mcp-Session-Id`); later requests without it get 400, with an unknown or expired one
//!   404 (the client initializes again); `DELETE` ends it. Sessions idle for 30 minutes
//!   expire. Each session holds its own upstream sessions, made on first use.
//!   Requests without a session that declare protocol 2026-07-28 (header or `_meta`) are
//!   served statelessly on a per-key internal session.
//! - **Names**: upstream tool `t` of server `s` is exposed as `s__t` (see [`names`]);
//!   prompts likewise; resource URIs are passed through.
//! - **Filtering**: servers not granted to the key (or its team) are invisible. `tools/list`
//!   returns only tools every grant for their server permits (deny wins), page by page:
//!   the gateway cursor carries each upstream's own cursor. `tools/call` of anything else is
//!   refused with JSON-RPC error -32602 naming the tool, and never reaches the upstream.
//! - **Degradation**: every upstream exchange is bounded (10 s to initialize, 15 s per list
//!   page, 120 s per tool call). A list skips servers that fail and names them in
//!   `_meta["tollgate/unavailable"]`; a call to a failing server is a -32603 error naming it.
//! - **Notifications**: the GET listen stream relays upstream `*/list_changed` notifications
//!   and sends `notifications/tools/list_changed` when a policy reload changes the revision.
//! - **Accounting**: every `tools/call` is logged (`mcp tool call`) and counted in
//!   `tollgate_mcp_tool_calls_total{key_id,team,server,tool,outcome}`, where `tool` is a
//!   name an upstream server listed, else `other` (see [`names::KnownTools`]). With an audit
//!   trail, every `tools/call` (allowed, denied or unknown) is an `mcp_tool_call` record and
//!   every refusal of a key or a session a `denial` record.
//! - **Flooding**: one key holds at most [`session::MAX_SESSIONS_PER_KEY`] sessions (64) of
//!   the table's [`session::MAX_SESSIONS`]; past it its `initialize` gets HTTP 429 with a
//!   JSON-RPC error and `retry-after`.
//! - **Sidecar mode**: with `mcp_gateway` set, everything after the key check is the
//!   gateway's: the request is relayed to it unchanged (see [`relay`]).
//!
//! Not relayed: progress notifications and server-to-client requests (sampling,
//! elicitation) sent inside an upstream's response stream; responses are plain JSON.

pub mod body;
pub mod jsonrpc;
pub mod names;
pub mod relay;
pub mod session;
pub mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use self::jsonrpc::{
    GATEWAY_REFUSED, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, Message,
};
use self::session::{Lookup, NoRoom, Session, Sessions};
use crate::audit::Audit;
use crate::audit::events::{Identity, McpToolCall};
use crate::auth::authenticate;
use crate::body::{ProxyBody, boxed};
use crate::denial::Denial;
use crate::metrics::Metrics;
use crate::policy::{KeyEntry, McpServerEntry, PolicyStore, Snapshot};
use crate::upstream::HttpClient;

/// The most of a client's tool name written to a span or a log line: an upstream's own name
/// (at most 128 characters) behind a server prefix fits.
const MAX_TOOL_NAME_BYTES: usize = 256;

/// `name` cut to [`MAX_TOOL_NAME_BYTES`] at a character boundary.
fn clipped(name: &str) -> &str {
    if name.len() <= MAX_TOOL_NAME_BYTES {
        return name;
    }
    let mut end = MAX_TOOL_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Session-style revisions the gateway speaks to clients, oldest first.
pub const SESSION_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The stateless revision accepted without a session.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// Offered when a client asks for a revision the gateway does not speak.
pub const LATEST_SESSION_VERSION: &str = "2025-11-25";

/// Largest request body accepted on `/mcp`.
const MAX_BODY_BYTES: usize = 4 << 20;
/// Bound on one upstream list page (initializing included).
const LIST_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on one upstream tool call.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Keep-alive interval of the GET listen stream; also how often a policy change is noticed.
const LISTEN_TICK: Duration = Duration::from_secs(5);

/// The MCP gateway state shared by every request.
pub struct McpGateway {
    store: Arc<PolicyStore>,
    client: HttpClient,
    metrics: Arc<Metrics>,
    sessions: Sessions,
    /// Tool names the upstream servers listed: the bounded `tool` metric label.
    known_tools: names::KnownTools,
    /// Where tool calls and refusals are recorded, when auditing.
    audit: Option<Audit>,
}

/// The kinds of list the gateway aggregates.
#[derive(Clone, Copy)]
struct ListKind {
    method: &'static str,
    field: &'static str,
    capability: &'static str,
    /// Prefix item names with the server (tools, prompts).
    rename: bool,
    /// Keep only tools the key may call.
    filter_tools: bool,
}

const TOOLS: ListKind = ListKind {
    method: "tools/list",
    field: "tools",
    capability: "tools",
    rename: true,
    filter_tools: true,
};
const PROMPTS: ListKind = ListKind {
    method: "prompts/list",
    field: "prompts",
    capability: "prompts",
    rename: true,
    filter_tools: false,
};
const RESOURCES: ListKind = ListKind {
    method: "resources/list",
    field: "resources",
    capability: "resources",
    rename: false,
    filter_tools: false,
};
const TEMPLATES: ListKind = ListKind {
    method: "resources/templates/list",
    field: "resourceTemplates",
    capability: "resources",
    rename: false,
    filter_tools: false,
};

/// An error response to a request, with its HTTP status.
struct Refusal {
    status: StatusCode,
    body: Value,
}

impl Refusal {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            body: jsonrpc::error(&Value::Null, code, message, None),
        }
    }
}

impl McpGateway {
    /// Creates the gateway; upstream calls go through `client`, the one HTTP client.
    pub fn new(store: Arc<PolicyStore>, client: HttpClient, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            client,
            metrics,
            sessions: Sessions::new(session::DEFAULT_IDLE_TTL),
            known_tools: names::KnownTools::default(),
            audit: None,
        }
    }

    /// Records tool calls and refusals in `audit` (when auditing).
    pub fn set_audit(&mut self, audit: Option<Audit>) {
        self.audit = audit;
    }

    /// Serves one request on the MCP endpoint; never fails (errors are JSON-RPC errors).
    /// `request_id` is the gateway's id of the HTTP request, for the audit trail.
    pub async fn handle(
        &self,
        req: hyper::Request<Incoming>,
        request_id: &str,
        span: &tracing::Span,
    ) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        match self.serve(&parts, body, request_id, span).await {
            Ok(resp) => resp,
            Err(r) => json_response(r.status, &r.body, None),
        }
    }

    async fn serve(
        &self,
        parts: &Parts,
        body: Incoming,
        request_id: &str,
        span: &tracing::Span,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let (method, headers) = (&parts.method, &parts.headers);
        if !origin_allowed(headers) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                GATEWAY_REFUSED,
                "tollgate: cross-origin MCP requests are not allowed",
            ));
        }
        let snapshot = self.store.snapshot().ok_or_else(|| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                INTERNAL_ERROR,
                "tollgate: the gateway has no valid policy loaded yet",
            )
        })?;
        let key = authenticate(&snapshot, headers, jiff::Timestamp::now())
            .map_err(|d| self.refuse_key(&d, request_id))?;
        span.record("key_id", key.id.as_str());
        if let Some(team) = &key.team {
            span.record("team", team.as_str());
        }
        if let Some(gateway) = snapshot.mcp_gateway() {
            let client_key = crate::auth::presented_key_of(&snapshot, headers, &key);
            return relay::relay(&self.client, gateway, parts, client_key, body).await;
        }
        let version = header_str(headers, "mcp-protocol-version");
        if let Some(v) = version {
            if !SESSION_VERSIONS.contains(&v) && v != STATELESS_VERSION {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    format!("unsupported MCP-Protocol-Version {v:?}"),
                ));
            }
        }
        let session_id = header_str(headers, "mcp-session-id");
        match *method {
            Method::POST => {
                self.post(headers, body, &snapshot, &key, session_id, request_id)
                    .await
            }
            Method::GET => {
                let accepts = header_str(headers, "accept").is_some_and(|a| a.contains("text/event-stream"));
                if !accepts {
                    return Err(Refusal::new(
                        StatusCode::NOT_ACCEPTABLE,
                        INVALID_REQUEST,
                        "the listen stream needs Accept: text/event-stream",
                    ));
                }
                let session = self.session(session_id, &key)?;
                Ok(self.listen(session))
            }
            Method::DELETE => {
                let id = session_id.ok_or_else(missing_session)?;
                if self.sessions.remove(id, &key.id) {
                    Ok(json_response(StatusCode::OK, &json!({}), None))
                } else {
                    Err(unknown_session())
                }
            }
            _ => {
                let mut r = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &jsonrpc::error(&Value::Null, INVALID_REQUEST, "use POST, GET or DELETE", None),
                    None,
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                Ok(r)
            }
        }
    }

    fn refuse_key(&self, d: &Denial, request_id: &str) -> Refusal {
        self.metrics.denial(d.reason(), "", "");
        tracing::warn!(reason = d.reason(), status = d.status(), "MCP request denied");
        let message = match d {
            Denial::MissingKey => {
                "tollgate: no virtual key: send it as Authorization: Bearer <key> (or x-api-key) on MCP requests"
                    .to_owned()
            }
            other => other.message(),
        };
        if let Some(a) = &self.audit {
            a.refusal(d.reason(), d.status(), &message, request_id, None, None);
        }
        let status = StatusCode::from_u16(d.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Refusal::new(status, GATEWAY_REFUSED, message)
    }

    fn session(&self, id: Option<&str>, key: &KeyEntry) -> Result<Arc<Session>, Refusal> {
        let id = id.ok_or_else(missing_session)?;
        self.sessions
            .get(id, &key.id, Instant::now())
            .map_err(|_: Lookup| unknown_session())
    }

    async fn post(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        snapshot: &Arc<Snapshot>,
        key: &Arc<KeyEntry>,
        session_id: Option<&str>,
        request_id: &str,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let bytes = read_body(body).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::PARSE_ERROR,
                format!("invalid JSON: {e}"),
            )
        })?;
        let message = jsonrpc::classify(value).map_err(|body| Refusal {
            status: StatusCode::BAD_REQUEST,
            body,
        })?;
        if let Message::Request { id, method, params } = &message {
            if method == "initialize" {
                return self.initialize(id, params, snapshot, key, request_id);
            }
        }
        let stateless = session_id.is_none() && declares_stateless(headers, &message);
        let session = if stateless {
            self.sessions.stateless(&key.id, Instant::now()).ok_or_else(|| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    INTERNAL_ERROR,
                    "session table unavailable",
                )
            })?
        } else {
            self.session(session_id, key)?
        };
        let echo = (!stateless).then_some(session.id.as_str());
        match message {
            Message::Notification { .. } | Message::Response => Ok(accepted(echo)),
            Message::Request { id, method, params } => {
                let reply = self
                    .dispatch(&session, snapshot, key, (&id, request_id), &method, params)
                    .await;
                Ok(json_response(StatusCode::OK, &reply, echo))
            }
        }
    }

    fn initialize(
        &self,
        id: &Value,
        params: &Value,
        snapshot: &Snapshot,
        key: &KeyEntry,
        request_id: &str,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = if SESSION_VERSIONS.contains(&asked) {
            asked
        } else {
            LATEST_SESSION_VERSION
        };
        let session = match self.sessions.create(&key.id, version, Instant::now()) {
            Ok(s) => s,
            Err(no_room) => return Ok(self.refuse_session(id, key, &no_room, request_id)),
        };
        let servers: Vec<&str> = snapshot
            .mcp_servers()
            .iter()
            .filter(|s| key.mcp_granted(&s.name))
            .map(|s| s.name.as_str())
            .collect();
        tracing::info!(session = %session.id, %version, servers = ?servers, "MCP session created");
        let instructions = format!(
            "Tollgate MCP gateway. Tools of the MCP servers granted to this key ({}) are named <server>__<tool>.",
            if servers.is_empty() {
                "none".to_owned()
            } else {
                servers.join(", ")
            }
        );
        let result = json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "resources": {"listChanged": true},
            },
            "serverInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
            "instructions": instructions,
        });
        Ok(json_response(
            StatusCode::OK,
            &jsonrpc::result(id, result),
            Some(&session.id),
        ))
    }

    /// An `initialize` the session table cannot take: the key's quota (429, `retry-after`)
    /// or the whole table (503), as a JSON-RPC error; recorded as a denial.
    fn refuse_session(
        &self,
        id: &Value,
        key: &KeyEntry,
        no_room: &NoRoom,
        request_id: &str,
    ) -> Response<ProxyBody> {
        let (reason, status, message, retry_after) = match no_room {
            NoRoom::Key { limit, retry_after } => (
                "mcp_session_quota",
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "tollgate: virtual key {:?} holds {limit} MCP sessions, the most one key may: end unused ones (DELETE /mcp) or wait for one to expire",
                    key.id
                ),
                retry_after.as_secs().max(1),
            ),
            NoRoom::Table => (
                "mcp_session_table_full",
                StatusCode::SERVICE_UNAVAILABLE,
                "tollgate: too many MCP sessions; retry later".to_owned(),
                5,
            ),
        };
        let team = key.team.as_deref().unwrap_or("");
        self.metrics.denial(reason, &key.id, team);
        tracing::warn!(reason, status = status.as_u16(), "MCP session refused");
        if let Some(a) = &self.audit {
            a.refusal(reason, status.as_u16(), &message, request_id, Some(key), None);
        }
        let mut r = json_response(status, &jsonrpc::error(id, GATEWAY_REFUSED, message, None), None);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        r
    }

    async fn dispatch(
        &self,
        session: &Arc<Session>,
        snapshot: &Arc<Snapshot>,
        key: &Arc<KeyEntry>,
        (id, request_id): (&Value, &str),
        method: &str,
        params: Value,
    ) -> Value {
        match method {
            "ping" | "logging/setLevel" => jsonrpc::result(id, json!({})),
            "tools/list" => {
                if let Ok(mut r) = session.listed_revision.lock() {
                    *r = Some(snapshot.revision.clone());
                }
                self.list(TOOLS, session, snapshot, key, id, &params).await
            }
            "prompts/list" => self.list(PROMPTS, session, snapshot, key, id, &params).await,
            "resources/list" => self.list(RESOURCES, session, snapshot, key, id, &params).await,
            "resources/templates/list" => self.list(TEMPLATES, session, snapshot, key, id, &params).await,
            "tools/call" => {
                self.call_tool(session, snapshot, key, (id, request_id), params)
                    .await
            }
            "prompts/get" => self.get_prompt(session, snapshot, key, id, params).await,
            "resources/read" => self.read_resource(session, snapshot, key, id, params).await,
            other => jsonrpc::error(
                id,
                METHOD_NOT_FOUND,
                format!("method {other:?} is not supported by the tollgate MCP gateway"),
                None,
            ),
        }
    }

    /// One page of an aggregated list: the next page of every granted server still pending.
    async fn list(
        &self,
        kind: ListKind,
        session: &Arc<Session>,
        snapshot: &Snapshot,
        key: &Arc<KeyEntry>,
        id: &Value,
        params: &Value,
    ) -> Value {
        let granted: Vec<&Arc<McpServerEntry>> = snapshot
            .mcp_servers()
            .iter()
            .filter(|s| key.mcp_granted(&s.name))
            .collect();
        let pending: Vec<(&Arc<McpServerEntry>, Option<String>)> =
            match params.get("cursor").and_then(Value::as_str) {
                None => granted.into_iter().map(|s| (s, None)).collect(),
                Some(c) => match decode_cursor(c, kind.method) {
                    Some(map) => granted
                        .into_iter()
                        .filter_map(|s| map.get(&s.name).map(|c| (s, Some(c.clone()))))
                        .collect(),
                    None => return jsonrpc::error(id, INVALID_PARAMS, "invalid cursor", None),
                },
            };
        let mut tasks = JoinSet::new();
        for (i, (entry, cursor)) in pending.iter().enumerate() {
            let conn = session.upstream(entry, &self.client);
            let cursor = cursor.clone();
            tasks.spawn(async move {
                if !conn.has_capability(kind.capability).await {
                    return (i, Ok(None));
                }
                let p = cursor.map_or(Value::Null, |c| json!({"cursor": c}));
                (i, conn.request(kind.method, p, LIST_TIMEOUT).await.map(Some))
            });
        }
        let mut answers: Vec<Option<Result<Option<Value>, upstream::UpstreamError>>> =
            (0..pending.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, r)) = joined {
                answers[i] = Some(r);
            }
        }
        let mut items = Vec::new();
        let mut next = serde_json::Map::new();
        let mut unavailable = Vec::new();
        for ((entry, _), answer) in pending.iter().zip(answers) {
            let server = entry.name.as_str();
            let resp = match answer {
                Some(Ok(Some(resp))) => resp,
                Some(Ok(None)) => continue,
                Some(Err(e)) => {
                    tracing::warn!(server, method = kind.method, error = %e, "MCP server unavailable");
                    unavailable.push(json!({"server": server, "error": e.to_string()}));
                    continue;
                }
                None => {
                    unavailable.push(json!({"server": server, "error": "internal task failure"}));
                    continue;
                }
            };
            let Some(result) = resp.get("result") else {
                let code = resp["error"]["code"].as_i64();
                if code != Some(METHOD_NOT_FOUND) {
                    let msg = resp["error"]["message"].as_str().unwrap_or("error").to_owned();
                    tracing::warn!(server, method = kind.method, error = %msg, "MCP server refused a list");
                    unavailable.push(json!({"server": server, "error": msg}));
                }
                continue;
            };
            if let Some(c) = result.get("nextCursor").and_then(Value::as_str) {
                next.insert(server.to_owned(), Value::String(c.to_owned()));
            }
            let Some(list) = result.get(kind.field).and_then(Value::as_array) else {
                continue;
            };
            for item in list {
                let mut item = item.clone();
                if kind.rename {
                    let Some(name) = item.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    if kind.filter_tools {
                        self.known_tools.learn(server, name);
                    }
                    if kind.filter_tools && !key.may_call_mcp(server, name) {
                        continue;
                    }
                    let Some(exposed) = names::qualify(server, name) else {
                        tracing::warn!(server, name, "MCP name too long once prefixed; not exposed");
                        continue;
                    };
                    item["name"] = Value::String(exposed);
                } else if let Some(uri) = item.get("uri").and_then(Value::as_str) {
                    if let Ok(mut m) = session.resource_servers.lock() {
                        m.insert(uri.to_owned(), server.to_owned());
                    }
                }
                items.push(item);
            }
        }
        if !pending.is_empty() && unavailable.len() == pending.len() {
            let detail: Vec<String> = unavailable
                .iter()
                .map(|u| {
                    format!(
                        "{}: {}",
                        u["server"].as_str().unwrap_or(""),
                        u["error"].as_str().unwrap_or("")
                    )
                })
                .collect();
            return jsonrpc::error(
                id,
                INTERNAL_ERROR,
                format!(
                    "tollgate: no MCP server answered {}: {}",
                    kind.method,
                    detail.join("; ")
                ),
                Some(json!({"unavailable": unavailable})),
            );
        }
        let mut result = json!({ kind.field: items });
        if !next.is_empty() {
            result["nextCursor"] = Value::String(encode_cursor(kind.method, next));
        }
        if !unavailable.is_empty() {
            result["_meta"] = json!({"tollgate/unavailable": unavailable});
        }
        jsonrpc::result(id, result)
    }

    async fn call_tool(
        &self,
        session: &Arc<Session>,
        snapshot: &Snapshot,
        key: &KeyEntry,
        (id, request_id): (&Value, &str),
        mut params: Value,
    ) -> Value {
        let team = key.team.as_deref().unwrap_or("");
        // OpenTelemetry hook: a span per call, its outcome set where the call is recorded.
        // A client's tool name is clipped wherever it is written (spans, logs): a valid one is
        // at most an upstream's 128 characters behind a server prefix.
        let otel = match params.get("name").and_then(Value::as_str) {
            Some(name) => crate::telemetry::ToolSpan::start(clipped(name), key, &session.id),
            None => crate::telemetry::ToolSpan::default(),
        };
        let record = |server: &str, tool: &str, outcome: &'static str, duration_ms: Option<u64>| {
            otel.outcome(server, tool, outcome);
            let Some(a) = &self.audit else { return };
            let allowed = !matches!(outcome, "denied" | "unknown");
            a.mcp_tool_call(McpToolCall {
                identity: Identity {
                    request_id: request_id.to_owned(),
                    key_id: Some(key.id.clone()),
                    user: key.user.clone(),
                    team: key.team.clone(),
                    session_id: Some(session.id.clone()),
                },
                server: server.to_owned(),
                tool: tool.to_owned(),
                allowed,
                outcome,
                reason: match outcome {
                    "denied" => Some("denied by policy".to_owned()),
                    "unknown" => Some("no MCP server of this gateway has this tool".to_owned()),
                    _ => None,
                },
                duration_ms,
            });
        };
        let Some(name) = params.get("name").and_then(Value::as_str).map(str::to_owned) else {
            return jsonrpc::error(id, INVALID_PARAMS, "tools/call: params.name is required", None);
        };
        let target =
            names::split(&name).and_then(|(s, t)| snapshot.mcp_server(s).map(|e| (e.clone(), t.to_owned())));
        let Some((entry, tool)) = target else {
            self.metrics.mcp_tool_call(&key.id, team, "", "", "unknown");
            tracing::warn!(tool = %clipped(&name), outcome = "unknown", "mcp tool call");
            record("", &name, "unknown", None);
            return jsonrpc::error(
                id,
                INVALID_PARAMS,
                format!("tollgate: unknown tool {:?}", clipped(&name)),
                None,
            );
        };
        let server = entry.name.as_str();
        let label = self.known_tools.label(server, &tool);
        if !key.may_call_mcp(server, &tool) {
            self.metrics.mcp_tool_call(&key.id, team, server, label, "denied");
            tracing::warn!(server, tool = %clipped(&tool), outcome = "denied", "mcp tool call");
            record(server, &tool, "denied", None);
            return jsonrpc::error(
                id,
                INVALID_PARAMS,
                format!(
                    "tollgate: tool {name:?} is not permitted for virtual key {:?}",
                    key.id
                ),
                Some(json!({"tool": name, "reason": "denied by policy"})),
            );
        }
        params["name"] = Value::String(tool.clone());
        let started = Instant::now();
        let conn = session.upstream(&entry, &self.client);
        let (reply, outcome) = match conn.request("tools/call", params, CALL_TIMEOUT).await {
            Ok(resp) => match (resp.get("result"), resp.get("error")) {
                (Some(r), _) => {
                    let failed = r.get("isError").and_then(Value::as_bool) == Some(true);
                    (
                        jsonrpc::result(id, r.clone()),
                        if failed { "tool_error" } else { "ok" },
                    )
                }
                (None, Some(e)) => (json!({"jsonrpc": "2.0", "id": id, "error": e}), "upstream_error"),
                (None, None) => (
                    jsonrpc::error(
                        id,
                        INTERNAL_ERROR,
                        format!("tollgate: MCP server {server:?} sent an invalid response"),
                        None,
                    ),
                    "upstream_error",
                ),
            },
            Err(e) => (
                jsonrpc::error(
                    id,
                    INTERNAL_ERROR,
                    format!("tollgate: MCP server {server:?} is unavailable: {e}"),
                    Some(json!({"server": server})),
                ),
                "unavailable",
            ),
        };
        self.metrics.mcp_tool_call(&key.id, team, server, label, outcome);
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(server, tool = %clipped(&tool), outcome, duration_ms, "mcp tool call");
        record(server, &tool, outcome, Some(duration_ms));
        reply
    }

    async fn get_prompt(
        &self,
        session: &Arc<Session>,
        snapshot: &Snapshot,
        key: &KeyEntry,
        id: &Value,
        mut params: Value,
    ) -> Value {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let target = names::split(&name)
            .filter(|(s, _)| key.mcp_granted(s))
            .and_then(|(s, p)| snapshot.mcp_server(s).map(|e| (e.clone(), p.to_owned())));
        let Some((entry, prompt)) = target else {
            return jsonrpc::error(
                id,
                INVALID_PARAMS,
                format!("tollgate: unknown prompt {name:?}"),
                None,
            );
        };
        params["name"] = Value::String(prompt);
        self.forward(session, &entry, id, "prompts/get", params).await
    }

    async fn read_resource(
        &self,
        session: &Arc<Session>,
        snapshot: &Snapshot,
        key: &KeyEntry,
        id: &Value,
        params: Value,
    ) -> Value {
        let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
        let server = session
            .resource_servers
            .lock()
            .ok()
            .and_then(|m| m.get(uri).cloned());
        let entry = server
            .filter(|s| key.mcp_granted(s))
            .and_then(|s| snapshot.mcp_server(&s).cloned());
        let Some(entry) = entry else {
            return jsonrpc::error(
                id,
                -32002,
                format!("tollgate: resource {uri:?} not found (list resources first)"),
                None,
            );
        };
        self.forward(session, &entry, id, "resources/read", params).await
    }

    async fn forward(
        &self,
        session: &Arc<Session>,
        entry: &Arc<McpServerEntry>,
        id: &Value,
        method: &str,
        params: Value,
    ) -> Value {
        let conn = session.upstream(entry, &self.client);
        match conn.request(method, params, LIST_TIMEOUT).await {
            Ok(mut resp) => {
                resp["id"] = id.clone();
                resp
            }
            Err(e) => jsonrpc::error(
                id,
                INTERNAL_ERROR,
                format!("tollgate: MCP server {:?} is unavailable: {e}", entry.name),
                None,
            ),
        }
    }

    /// The GET listen stream: upstream `list_changed` notifications, a policy change, and
    /// keep-alive comments, until the client goes away.
    fn listen(&self, session: Arc<Session>) -> Response<ProxyBody> {
        let (tx, body) = body::channel(16);
        let mut events = session.events.subscribe();
        let store = self.store.clone();
        let task_session = session.clone();
        tokio::spawn(async move {
            let session = task_session;
            let mut tick = tokio::time::interval(LISTEN_TICK);
            loop {
                let frame = tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(raw) => sse_message(&raw),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            sse_message(jsonrpc::notification("notifications/tools/list_changed").to_string().as_bytes())
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick.tick() => {
                        if session.is_closed() {
                            break;
                        }
                        session.touch(Instant::now());
                        let revision = store.snapshot().map(|s| s.revision.clone());
                        let changed = match (session.listed_revision.lock(), revision) {
                            (Ok(mut seen), Some(rev)) if seen.as_ref().is_some_and(|s| *s != rev) => {
                                *seen = Some(rev);
                                true
                            }
                            _ => false,
                        };
                        if changed {
                            tracing::info!(session = %session.id, "policy changed: telling the MCP client to list tools again");
                            sse_message(jsonrpc::notification("notifications/tools/list_changed").to_string().as_bytes())
                        } else {
                            Bytes::from_static(b": keep-alive\n\n")
                        }
                    }
                };
                if tx.send(frame).await.is_err() {
                    break;
                }
            }
        });
        let mut r = Response::new(Either::Right(boxed(body)));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&session.id) {
            h.insert("mcp-session-id", v);
        }
        r
    }
}

/// Reads a request body whole, within [`MAX_BODY_BYTES`] (a larger declared length is
/// refused before waiting for any of it).
async fn read_body(body: Incoming) -> Result<Bytes, Refusal> {
    if http_body::Body::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        ));
    }
    Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            Refusal::new(
                status,
                INVALID_REQUEST,
                format!("could not read the request body: {e}"),
            )
        })
}

fn sse_message(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn missing_session() -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        INVALID_REQUEST,
        "Mcp-Session-Id header required: send initialize first",
    )
}

fn unknown_session() -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        GATEWAY_REFUSED,
        "tollgate: MCP session not found or expired: initialize again",
    )
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A request of the 2026-07-28 (stateless) style: the version in the header or in `_meta`.
fn declares_stateless(headers: &HeaderMap, message: &Message) -> bool {
    if header_str(headers, "mcp-protocol-version") == Some(STATELESS_VERSION) {
        return true;
    }
    match message {
        Message::Request { params, .. } => params
            .get("_meta")
            .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
            .is_some(),
        _ => false,
    }
}

/// DNS-rebinding protection: a browser `Origin` must name this host or loopback.
fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = header_str(headers, "origin") else {
        return true;
    };
    let host_of = |s: &str| -> String {
        let s = s.split_once("://").map_or(s, |(_, rest)| rest);
        let s = s.split('/').next().unwrap_or(s);
        let host = if s.starts_with('[') {
            s.split_once(']').map_or(s, |(h, _)| h).trim_start_matches('[')
        } else {
            s.rsplit_once(':').map_or(s, |(h, _)| h)
        };
        host.to_ascii_lowercase()
    };
    let origin_host = host_of(origin);
    if matches!(origin_host.as_str(), "localhost" | "127.0.0.1" | "::1") {
        return true;
    }
    header_str(headers, "host").is_some_and(|h| host_of(h) == origin_host)
}

fn encode_cursor(method: &str, cursors: serde_json::Map<String, Value>) -> String {
    hex::encode(json!({"m": method, "c": cursors}).to_string())
}

pub(crate) fn decode_cursor(cursor: &str, method: &str) -> Option<HashMap<String, String>> {
    let bytes = hex::decode(cursor).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    if v.get("m")?.as_str()? != method {
        return None;
    }
    v.get("c")?
        .as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

fn json_response(status: StatusCode, v: &Value, session: Option<&str>) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tollgate\""),
        );
    }
    if let Some(v) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("mcp-session-id", v);
    }
    r
}

fn accepted(session: Option<&str>) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::ACCEPTED;
    if let Some(v) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        r.headers_mut().insert("mcp-session-id", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_method() {
        let mut m = serde_json::Map::new();
        m.insert("alpha".into(), Value::String("page-2".into()));
        let c = encode_cursor("tools/list", m);
        let back = decode_cursor(&c, "tools/list").unwrap();
        assert_eq!(back.get("alpha").map(String::as_str), Some("page-2"));
        assert!(decode_cursor(&c, "prompts/list").is_none());
        assert!(decode_cursor("zz", "tools/list").is_none());
    }

    #[test]
    fn origins() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(origin_allowed(&h(&[])));
        assert!(origin_allowed(&h(&[("origin", "http://localhost:3000")])));
        assert!(origin_allowed(&h(&[("origin", "http://[::1]:3000")])));
        assert!(origin_allowed(&h(&[
            ("origin", "https://gw.acme.example"),
            ("host", "gw.acme.example:443")
        ])));
        assert!(!origin_allowed(&h(&[
            ("origin", "https://evil.example"),
            ("host", "gw.acme.example")
        ])));
    }
}
