//! A gateway session's connection to one upstream MCP server (Streamable HTTP, session
//! style): lazy `initialize` on first use, the upstream's own `Mcp-Session-Id` and protocol
//! version on every request, re-initialization when the upstream expires the session (404),
//! responses read as JSON or SSE, and the upstream's GET listen stream relayed for
//! `list_changed` notifications. The upstream sees the server's own credential, never the
//! engineer's virtual key, and none of the client's headers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::policy::McpServerEntry;
use crate::sse::DataReader;
use crate::upstream::HttpClient;

/// The protocol revision the gateway offers upstream.
pub const UPSTREAM_PROTOCOL_VERSION: &str = "2025-11-25";

/// Largest JSON response read from an upstream.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Largest event of an upstream's SSE response or listen stream, so a hostile upstream
/// cannot grow a buffer without limit.
const MAX_SSE_EVENT_BYTES: usize = 16 << 20;

/// Why an upstream exchange failed. Messages name no secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting or sending failed.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No complete answer in time.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// A non-success HTTP status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The upstream no longer knows our session (HTTP 404); the caller re-initializes.
    #[error("the upstream session expired")]
    SessionExpired,
    /// The answer was not the JSON-RPC message expected.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server's credential could not be read or used.
    #[error("credential unavailable: {0}")]
    Credential(String),
}

#[derive(Debug, Default)]
struct ConnState {
    ready: bool,
    session: Option<String>,
    version: Option<String>,
    capabilities: Value,
}

/// One upstream server as seen from one gateway session.
pub struct UpstreamConn {
    entry: Arc<McpServerEntry>,
    client: HttpClient,
    state: tokio::sync::Mutex<ConnState>,
    next_id: AtomicU64,
    events: broadcast::Sender<Bytes>,
    listen: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// What one POST brought back.
struct Reply {
    session: Option<String>,
    message: Option<Value>,
}

impl UpstreamConn {
    /// A connection that initializes on first use; `list_changed` notifications from the
    /// upstream are sent to `events`.
    pub fn new(entry: Arc<McpServerEntry>, client: HttpClient, events: broadcast::Sender<Bytes>) -> Self {
        Self {
            entry,
            client,
            state: tokio::sync::Mutex::new(ConnState::default()),
            next_id: AtomicU64::new(1),
            events,
            listen: std::sync::Mutex::new(None),
        }
    }

    /// The policy entry this connection was made for (a reload that changes it makes a new one).
    pub fn entry(&self) -> &Arc<McpServerEntry> {
        &self.entry
    }

    /// Whether the upstream declared `capability` (e.g. `prompts`) when it initialized.
    pub async fn has_capability(&self, capability: &str) -> bool {
        let s = self.state.lock().await;
        !s.ready || s.capabilities.get(capability).is_some()
    }

    /// Sends a request and returns the upstream's JSON-RPC response object (`result` or
    /// `error`), initializing first when needed; the whole exchange is bounded by `limit`.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        limit: Duration,
    ) -> Result<Value, UpstreamError> {
        let work = async {
            self.ensure_ready().await?;
            match self.exchange(method, &params).await {
                Err(UpstreamError::SessionExpired) => {
                    tracing::info!(server = %self.entry.name, "upstream MCP session expired; initializing again");
                    self.reset().await;
                    self.ensure_ready().await?;
                    self.exchange(method, &params).await
                }
                other => other,
            }
        };
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| UpstreamError::Timeout(limit))?
    }

    async fn reset(&self) {
        let mut s = self.state.lock().await;
        *s = ConnState::default();
        if let Some(h) = self.listen.lock().ok().and_then(|mut l| l.take()) {
            h.abort();
        }
    }

    async fn ensure_ready(&self) -> Result<(), UpstreamError> {
        let mut s = self.state.lock().await;
        if s.ready {
            return Ok(());
        }
        let params = json!({
            "protocolVersion": UPSTREAM_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params});
        let reply = self.post(&body, Some(id), None, None).await?;
        let msg = reply
            .message
            .ok_or_else(|| UpstreamError::Protocol("no answer to initialize".into()))?;
        let result = msg.get("result").ok_or_else(|| {
            UpstreamError::Protocol(format!(
                "initialize failed: {}",
                msg.get("error").unwrap_or(&Value::Null)
            ))
        })?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(UPSTREAM_PROTOCOL_VERSION)
            .to_owned();
        let capabilities = result.get("capabilities").cloned().unwrap_or(Value::Null);
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.post(&initialized, None, reply.session.as_deref(), Some(&version))
            .await?;
        tracing::debug!(server = %self.entry.name, %version, "upstream MCP session initialized");
        if capabilities.get("tools").and_then(|t| t.get("listChanged")) == Some(&Value::Bool(true))
            || capabilities.get("prompts").and_then(|t| t.get("listChanged")) == Some(&Value::Bool(true))
            || capabilities.get("resources").and_then(|t| t.get("listChanged")) == Some(&Value::Bool(true))
        {
            let task = tokio::spawn(listen(
                self.entry.clone(),
                self.client.clone(),
                reply.session.clone(),
                version.clone(),
                self.events.clone(),
            ));
            if let Ok(mut l) = self.listen.lock() {
                if let Some(old) = l.replace(task) {
                    old.abort();
                }
            }
        }
        *s = ConnState {
            ready: true,
            session: reply.session,
            version: Some(version),
            capabilities,
        };
        Ok(())
    }

    async fn exchange(&self, method: &str, params: &Value) -> Result<Value, UpstreamError> {
        let (session, version) = {
            let s = self.state.lock().await;
            (s.session.clone(), s.version.clone())
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            body["params"] = params.clone();
        }
        let reply = self
            .post(&body, Some(id), session.as_deref(), version.as_deref())
            .await?;
        reply
            .message
            .ok_or_else(|| UpstreamError::Protocol(format!("no answer to {method}")))
    }

    fn request_builder(
        &self,
        method: Method,
        session: Option<&str>,
        version: Option<&str>,
    ) -> http::request::Builder {
        let mut b = Request::builder().method(method).uri(&self.entry.url);
        if let Some(s) = session {
            b = b.header("mcp-session-id", s);
        }
        if let Some(v) = version {
            b = b.header("mcp-protocol-version", v);
        }
        b
    }

    fn authorize(&self, req: &mut Request<Full<Bytes>>) -> Result<(), UpstreamError> {
        authorize(&self.entry, req)
    }

    /// POSTs one message; for a request (`want` is its id) reads until its response.
    async fn post(
        &self,
        body: &Value,
        want: Option<u64>,
        session: Option<&str>,
        version: Option<&str>,
    ) -> Result<Reply, UpstreamError> {
        let mut req = self
            .request_builder(Method::POST, session, version)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| UpstreamError::Protocol(format!("bad upstream URL: {e}")))?;
        self.authorize(&mut req)?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| UpstreamError::Unreachable(crate::upstream::error_chain(&e)))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND && session.is_some() {
            return Err(UpstreamError::SessionExpired);
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let new_session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| session.map(str::to_owned));
        let Some(want) = want else {
            return Ok(Reply {
                session: new_session,
                message: None,
            });
        };
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let message = if is_sse {
            read_sse_response(resp.into_body(), want, &self.events).await?
        } else {
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| UpstreamError::Unreachable(format!("reading the response: {e}")))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| UpstreamError::Protocol(format!("response is not JSON: {e}")))?;
            find_response(v, want)
                .ok_or_else(|| UpstreamError::Protocol("response has no matching id".into()))?
        };
        Ok(Reply {
            session: new_session,
            message: Some(message),
        })
    }

    /// Ends the upstream session (best effort, in the background).
    pub fn close(&self) {
        if let Some(h) = self.listen.lock().ok().and_then(|mut l| l.take()) {
            h.abort();
        }
        let Ok(state) = self.state.try_lock() else { return };
        let Some(session) = state.session.clone() else {
            return;
        };
        let Ok(mut req) = self
            .request_builder(Method::DELETE, Some(&session), state.version.as_deref())
            .body(Full::new(Bytes::new()))
        else {
            return;
        };
        if self.authorize(&mut req).is_err() {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await;
        });
    }
}

impl Drop for UpstreamConn {
    fn drop(&mut self) {
        if let Some(h) = self.listen.get_mut().ok().and_then(Option::take) {
            h.abort();
        }
    }
}

fn authorize(entry: &McpServerEntry, req: &mut Request<Full<Bytes>>) -> Result<(), UpstreamError> {
    match &entry.credential {
        None => Ok(()),
        Some(Err(why)) => Err(UpstreamError::Credential(why.clone())),
        Some(Ok(secret)) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", secret.expose()))
                .map_err(|_| UpstreamError::Credential("not a valid header value".into()))?;
            v.set_sensitive(true);
            req.headers_mut().insert(header::AUTHORIZATION, v);
            Ok(())
        }
    }
}

/// The response with id `want` in a message or batch.
pub(crate) fn find_response(v: Value, want: u64) -> Option<Value> {
    let matches = |m: &Value| m.get("id").and_then(Value::as_u64) == Some(want);
    match v {
        Value::Array(items) => items.into_iter().find(matches),
        v if matches(&v) => Some(v),
        _ => None,
    }
}

fn relay_if_list_changed(msg: &Value, raw: &[u8], events: &broadcast::Sender<Bytes>) {
    if msg.get("id").is_none()
        && msg
            .get("method")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("notifications/") && m.ends_with("/list_changed"))
    {
        let _ = events.send(Bytes::copy_from_slice(raw));
    }
}

async fn read_sse_response(
    mut body: Incoming,
    want: u64,
    events: &broadcast::Sender<Bytes>,
) -> Result<Value, UpstreamError> {
    let mut reader = DataReader::new(MAX_SSE_EVENT_BYTES);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UpstreamError::Unreachable(format!("stream broken: {e}")))?;
        let Some(data) = frame.data_ref() else { continue };
        let payloads = reader
            .feed(data)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        for p in payloads {
            let Ok(msg) = serde_json::from_slice::<Value>(&p) else {
                continue;
            };
            relay_if_list_changed(&msg, &p, events);
            if let Some(found) = find_response(msg, want) {
                return Ok(found);
            }
        }
    }
    Err(UpstreamError::Protocol("stream ended without a response".into()))
}

/// Relays `list_changed` notifications from the upstream's GET listen stream until it ends.
async fn listen(
    entry: Arc<McpServerEntry>,
    client: HttpClient,
    session: Option<String>,
    version: String,
    events: broadcast::Sender<Bytes>,
) {
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(&entry.url)
        .header(header::ACCEPT, "text/event-stream")
        .header("mcp-protocol-version", &version);
    if let Some(s) = &session {
        b = b.header("mcp-session-id", s);
    }
    let Ok(mut req) = b.body(Full::new(Bytes::new())) else {
        return;
    };
    if authorize(&entry, &mut req).is_err() {
        return;
    }
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await else {
        return;
    };
    if !resp.status().is_success() {
        tracing::debug!(server = %entry.name, status = resp.status().as_u16(), "upstream offers no listen stream");
        return;
    }
    let mut body = resp.into_body();
    let mut reader = DataReader::new(MAX_SSE_EVENT_BYTES);
    while let Some(Ok(frame)) = body.frame().await {
        let Some(data) = frame.data_ref() else { continue };
        let Ok(payloads) = reader.feed(data) else { return };
        for p in payloads {
            if let Ok(msg) = serde_json::from_slice::<Value>(&p) {
                relay_if_list_changed(&msg, &p, &events);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_found_by_id_in_messages_and_batches() {
        let one = json!({"jsonrpc":"2.0","id":3,"result":{}});
        assert_eq!(find_response(one.clone(), 3), Some(one.clone()));
        assert_eq!(find_response(one.clone(), 4), None);
        let batch = json!([{"jsonrpc":"2.0","method":"notifications/progress"}, one.clone()]);
        assert_eq!(find_response(batch, 3), Some(one));
    }
}
