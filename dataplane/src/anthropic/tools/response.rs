//! The response half of the tool policy, defence in depth behind the request filter: a
//! content block calling a tool the policy does not permit never reaches the agent.
//!
//! The blocks judged are `tool_use` (by `name`), `server_tool_use` (by
//! [`server_tool_family`](super::server_tool_family)), `mcp_tool_use` (by the connector
//! policy name of its `server_name`'s location in the request; a server the request did not
//! declare is never permitted) and any other `*_tool_use` (by `name`); a block without a
//! string name is refused. They are looked for where the Anthropic SDKs take content from:
//! the `content` of a JSON message, and in a stream the `content_block` of
//! `content_block_start` and the `content` of `message_start`, whatever the SSE event name
//! (the SDKs go by the data's `type`).
//!
//! The gateway reads what the client would read: bytes are decoded as UTF-8 with
//! replacement, as a browser or Node does, and JSON with duplicate keys keeps the last, as
//! `JSON.parse` does. What it cannot read it does not pass: a compressed response (the
//! gateway asks for identity) or a JSON body that does not parse becomes a 502, and a stream
//! event whose data is not JSON, or that is larger than
//! [`MAX_EVENT_BYTES`], ends the stream with an `error` event. Events are held only until
//! their blank line; bytes before the stopping event reach the client unchanged. At the end
//! of a stream, an unterminated last event (which the SSE rules discard, but a lenient client
//! might read) is judged as if it had ended, and replaced by the `error` event if it calls a
//! tool that is not permitted.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::Value;

use super::{ToolJudge, connector_prefix, server_tool_family};
use crate::anthropic::error::error_body;
use crate::body::{ProxyBody, boxed};
use crate::sse::{Data, Event, Framer, Handler};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest non-streaming response inspected; a larger one is refused while a policy applies.
pub const MAX_JSON_RESPONSE: usize = 32 << 20;
/// Largest stream event held for inspection (a web fetch result can be large).
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// Whom a response is judged for: a policy, the connector servers the request declared and
/// the key id (for messages).
#[derive(Clone)]
pub struct Judged {
    judge: Arc<dyn ToolJudge>,
    key_id: String,
    connector: Arc<BTreeMap<String, String>>,
}

impl Judged {
    /// `connector` maps the request's MCP connector server names to their locations.
    pub fn new(judge: Arc<dyn ToolJudge>, key_id: String, connector: BTreeMap<String, String>) -> Self {
        Self {
            judge,
            key_id,
            connector: Arc::new(connector),
        }
    }

    /// The policy name of the tool a content block calls, when the policy does not permit it.
    pub fn forbidden_block(&self, block: &Value) -> Option<String> {
        let kind = block.get("type")?.as_str()?;
        if kind != "tool_use" && !kind.ends_with("_tool_use") {
            return None;
        }
        let Some(name) = block.get("name").and_then(Value::as_str) else {
            return Some(format!("<a {kind} block without a name>"));
        };
        let policy_name = match kind {
            "server_tool_use" => server_tool_family(name).to_owned(),
            "mcp_tool_use" => {
                let server = block.get("server_name").and_then(Value::as_str).unwrap_or("");
                match self.connector.get(server) {
                    Some(location) => format!("{}{name}", connector_prefix(location)),
                    None => return Some(format!("mcp_connector__<undeclared server '{server}'>__{name}")),
                }
            }
            _ => name.to_owned(),
        };
        (!self.judge.permits(&policy_name)).then_some(policy_name)
    }

    /// The first forbidden tool call in a JSON message.
    pub fn forbidden_in_message(&self, body: &[u8]) -> Result<Option<String>, Unreadable> {
        let v: Value = serde_json::from_str(&String::from_utf8_lossy(body)).map_err(|_| Unreadable)?;
        Ok(blocks(v.get("content")).find_map(|b| self.forbidden_block(b)))
    }

    /// The first forbidden tool call in the data of a stream event.
    pub fn forbidden_in_event(&self, data: &[u8]) -> Result<Option<String>, Unreadable> {
        let v: Value = serde_json::from_str(&String::from_utf8_lossy(data)).map_err(|_| Unreadable)?;
        Ok(match v.get("type").and_then(Value::as_str) {
            Some("content_block_start") => v.get("content_block").and_then(|b| self.forbidden_block(b)),
            Some("message_start") => {
                blocks(v.pointer("/message/content")).find_map(|b| self.forbidden_block(b))
            }
            _ => None,
        })
    }
}

fn blocks(content: Option<&Value>) -> impl Iterator<Item = &Value> {
    content.and_then(Value::as_array).into_iter().flatten()
}

/// The data could not be read as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// Why a stream was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    Forbidden(String),
    Unreadable,
    TooLarge,
}

/// What may go to the client after a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// These bytes (possibly none yet: the event in progress is held).
    Pass(Bytes),
    /// These last bytes (what passed the check, then an `error` event); nothing follows.
    Stop(Bytes),
}

/// The checking half of the stream guard, without I/O: fed the upstream bytes as they come,
/// it says what may go to the client.
pub struct StreamCheck {
    judged: Judged,
    max_event: usize,
    framer: Framer,
    /// Bytes of the event in progress, not yet passed.
    pending: BytesMut,
    stopped: bool,
}

/// Scans one chunk: where the last passable event ends, and what stops the stream.
struct Scan<'a> {
    judged: &'a Judged,
    max_event: usize,
    /// Offset in the pending bytes of the chunk being scanned.
    base: usize,
    /// End of the last event that may pass, in the pending bytes.
    passable: usize,
    stop: Option<Stop>,
    at_end: bool,
}

impl Handler for Scan<'_> {
    fn on_event(&mut self, event: Option<Event<'_>>, end: usize) {
        if self.stop.is_some() {
            return;
        }
        // The same bound on every event's bytes, however the chunks split.
        if !self.at_end && self.base + end - self.passable > self.max_event {
            self.stop = Some(Stop::TooLarge);
            return;
        }
        let stop = match event.map(|e| e.data) {
            Some(Data::Kept(data)) => match self.judged.forbidden_in_event(data) {
                Ok(Some(name)) => Some(Stop::Forbidden(name)),
                // A cut tail cannot be parsed by the client either.
                Err(Unreadable) if !self.at_end => Some(Stop::Unreadable),
                Ok(None) | Err(Unreadable) => None,
            },
            Some(Data::TooLarge) => Some(Stop::TooLarge),
            Some(Data::Skipped) | None => None,
        };
        match stop {
            Some(s) => self.stop = Some(s),
            None if !self.at_end => self.passable = self.base + end,
            None => {}
        }
    }
}

impl StreamCheck {
    /// A check for one response.
    pub fn new(judged: Judged) -> Self {
        Self::with_max_event(judged, MAX_EVENT_BYTES)
    }

    /// A check holding at most `max_event` bytes of one event (the guard uses
    /// [`MAX_EVENT_BYTES`]).
    pub fn with_max_event(judged: Judged, max_event: usize) -> Self {
        Self {
            judged,
            max_event,
            framer: Framer::new(max_event),
            pending: BytesMut::new(),
            stopped: false,
        }
    }

    /// Bytes held for the event in progress.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Reads the next chunk of the upstream body.
    pub fn feed(&mut self, chunk: &[u8]) -> Verdict {
        if self.stopped {
            return Verdict::Stop(Bytes::new());
        }
        let base = self.pending.len();
        self.pending.extend_from_slice(chunk);
        let mut scan = Scan {
            judged: &self.judged,
            max_event: self.max_event,
            base,
            passable: 0,
            stop: None,
            at_end: false,
        };
        self.framer.feed(chunk, &mut scan);
        let (passable, stop) = (scan.passable, scan.stop);
        let out = self.pending.split_to(passable);
        match stop {
            Some(stop) => self.stop(out, &stop),
            None if self.pending.len() > self.max_event => self.stop(out, &Stop::TooLarge),
            None => Verdict::Pass(out.freeze()),
        }
    }

    /// The upstream body ended: the unterminated tail, judged as if it had ended.
    pub fn finish(&mut self) -> Verdict {
        if self.stopped {
            return Verdict::Stop(Bytes::new());
        }
        if self.pending.len() > self.max_event {
            return self.stop(BytesMut::new(), &Stop::TooLarge);
        }
        let mut scan = Scan {
            judged: &self.judged,
            max_event: self.max_event,
            base: 0,
            passable: 0,
            stop: None,
            at_end: true,
        };
        self.framer.finish(&mut scan);
        match scan.stop {
            Some(stop) => self.stop(BytesMut::new(), &stop),
            None => Verdict::Pass(self.pending.split().freeze()),
        }
    }

    fn stop(&mut self, mut out: BytesMut, stop: &Stop) -> Verdict {
        self.stopped = true;
        self.pending = BytesMut::new();
        let (error_type, message) = match stop {
            Stop::Forbidden(name) => {
                tracing::warn!(tool = %name, "streamed call of a tool the policy does not permit refused");
                ("permission_error", refused_message(name, &self.judged.key_id))
            }
            Stop::Unreadable => {
                tracing::warn!("stream event not readable as JSON: stream stopped");
                (
                    "api_error",
                    "tollgate: an event of the provider's stream is not JSON, so it could not be checked against the tool policy; the response was stopped".to_owned(),
                )
            }
            Stop::TooLarge => {
                let limit = self.max_event;
                tracing::warn!(limit, "stream event too large to check: stream stopped");
                (
                    "api_error",
                    format!(
                        "tollgate: an event of the provider's stream is larger than {limit} bytes, so it could not be checked against the tool policy; the response was stopped"
                    ),
                )
            }
        };
        let error = serde_json::json!({
            "type": "error",
            "error": {"type": error_type, "message": message},
        });
        out.extend_from_slice(format!("event: error\ndata: {error}\n\n").as_bytes());
        Verdict::Stop(out.freeze())
    }
}

fn refused_message(tool: &str, key_id: &str) -> String {
    format!(
        "tollgate: the model called tool '{tool}', which the tool policy of virtual key '{key_id}' does not permit; the response was stopped"
    )
}

/// Watches a response for calls of tools the key's policy does not permit; see the module
/// docs.
pub struct ToolGuard {
    judged: Judged,
    /// Whether the request asked for a stream.
    stream: bool,
}

impl ToolGuard {
    /// A guard judging with `judge` for `key_id`; `connector` as in [`Judged::new`].
    pub fn new(
        judge: Arc<dyn ToolJudge>,
        key_id: String,
        connector: BTreeMap<String, String>,
        stream: bool,
    ) -> Self {
        Self {
            judged: Judged::new(judge, key_id, connector),
            stream,
        }
    }

    /// Wraps a successful response so that a forbidden tool call never reaches the client: a
    /// stream (by its content type, or a request for one answered by anything but JSON) is
    /// checked event by event as it streams; anything else is read whole and checked.
    pub async fn guard(self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        if !resp.status().is_success() {
            return resp;
        }
        let content_type = header_value(&resp, header::CONTENT_TYPE.as_str()).to_ascii_lowercase();
        let request_id = header_value(&resp, "x-tollgate-request-id");
        let encoding = header_value(&resp, header::CONTENT_ENCODING.as_str()).to_ascii_lowercase();
        if !matches!(encoding.trim(), "" | "identity") {
            // The gateway asks for identity; compressed bytes would pass unread to a client
            // that decompresses them.
            tracing::warn!(%encoding, "compressed response: refused");
            return refusal(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "tollgate: the provider's response is compressed, so it could not be checked against the tool policy",
                &request_id,
            );
        }
        let (parts, body) = resp.into_parts();
        let sse = content_type.starts_with("text/event-stream")
            || (self.stream && !content_type.starts_with("application/json"));
        if sse {
            let guarded = boxed(SseGuard {
                inner: Some(body),
                check: StreamCheck::new(self.judged),
            });
            return Response::from_parts(parts, Either::Right(guarded));
        }
        let bytes = match Limited::new(body, MAX_JSON_RESPONSE).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                tracing::warn!(error = %e, "response could not be read for the tool policy check");
                return refusal(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "tollgate: the provider's response could not be read to check it against the tool policy",
                    &request_id,
                );
            }
        };
        match self.judged.forbidden_in_message(&bytes) {
            Ok(None) => Response::from_parts(parts, Either::Left(Full::new(bytes))),
            Ok(Some(name)) => {
                tracing::warn!(tool = %name, "response call of a tool the policy does not permit refused");
                refusal(
                    StatusCode::FORBIDDEN,
                    "permission_error",
                    &refused_message(&name, &self.judged.key_id),
                    &request_id,
                )
            }
            Err(Unreadable) => {
                tracing::warn!("response not readable as JSON: refused");
                refusal(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "tollgate: the provider's response is not JSON, so it could not be checked against the tool policy",
                    &request_id,
                )
            }
        }
    }
}

fn header_value(resp: &Response<ProxyBody>, name: &str) -> String {
    let value = resp.headers().get(name).and_then(|v| v.to_str().ok());
    value.unwrap_or("").to_owned()
}

fn refusal(status: StatusCode, error_type: &str, message: &str, request_id: &str) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(error_body(
        error_type, message, request_id,
    ))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("x-should-retry", HeaderValue::from_static("false"));
    r
}

/// Passes SSE through whole event by whole event, stopping at a forbidden tool call.
struct SseGuard {
    inner: Option<ProxyBody>,
    check: StreamCheck,
}

impl Body for SseGuard {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let verdict = match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.inner = None;
                    this.check.finish()
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    this.check.feed(&data)
                }
            };
            let out = match verdict {
                Verdict::Pass(out) => out,
                Verdict::Stop(out) => {
                    // Dropping the upstream body ends the exchange (accounted as cut).
                    this.inner = None;
                    out
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::glob::AllowDeny;

    fn judged(allow: &[&str], deny: &[&str]) -> Judged {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut connector = BTreeMap::new();
        connector.insert("docs".to_owned(), "mcp.example.com/sse".to_owned());
        Judged::new(
            Arc::new(AllowDeny::new(&s(allow), &s(deny))),
            "k".into(),
            connector,
        )
    }

    fn start(block: &str) -> String {
        format!(
            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{block}}}\n\n"
        )
    }

    const HEAD: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n";

    /// Feeds `stream` in chunks of `n` (then finishes); returns what reached the client and
    /// whether the guard stopped it.
    fn run(j: &Judged, stream: &[u8], n: usize) -> (Vec<u8>, bool) {
        let mut check = StreamCheck::new(j.clone());
        let mut out = Vec::new();
        for c in stream.chunks(n.max(1)) {
            match check.feed(c) {
                Verdict::Pass(b) => out.extend_from_slice(&b),
                Verdict::Stop(b) => {
                    out.extend_from_slice(&b);
                    return (out, true);
                }
            }
        }
        match check.finish() {
            Verdict::Pass(b) => {
                out.extend_from_slice(&b);
                (out, false)
            }
            Verdict::Stop(b) => {
                out.extend_from_slice(&b);
                (out, true)
            }
        }
    }

    /// The same result for every chunk size; returns it.
    fn every_chunking(j: &Judged, stream: &[u8]) -> (String, bool) {
        let whole = run(j, stream, stream.len());
        for n in 1..=stream.len().min(64) {
            assert_eq!(run(j, stream, n), whole, "chunks of {n}");
        }
        (String::from_utf8(whole.0).unwrap(), whole.1)
    }

    #[test]
    fn server_tool_and_mcp_tool_calls_are_stopped_in_streams() {
        let j = judged(
            &["Read", "web_search", "mcp_connector__mcp.example.com/sse__search"],
            &[],
        );
        let blocks = [
            (r#"{"type":"tool_use","id":"t","name":"Bash","input":{}}"#, "Bash"),
            (
                r#"{"type":"server_tool_use","id":"s","name":"web_fetch","input":{}}"#,
                "web_fetch",
            ),
            (
                r#"{"type":"server_tool_use","id":"s","name":"bash_code_execution","input":{}}"#,
                "code_execution",
            ),
            (
                r#"{"type":"mcp_tool_use","id":"m","name":"delete","server_name":"docs","input":{}}"#,
                "mcp_connector__mcp.example.com/sse__delete",
            ),
            (
                r#"{"type":"mcp_tool_use","id":"m","name":"search","server_name":"other","input":{}}"#,
                "undeclared server 'other'",
            ),
            (
                r#"{"type":"advisor_tool_use","id":"a","name":"advisor","input":{}}"#,
                "advisor",
            ),
            (r#"{"type":"tool_use","id":"t","input":{}}"#, "without a name"),
        ];
        for (block, refused) in blocks {
            let stream = format!("{HEAD}{}event: content_block_delta\ndata: {{}}\n\n", start(block));
            let (out, stopped) = every_chunking(&j, stream.as_bytes());
            assert!(stopped, "{block}");
            assert!(out.starts_with(HEAD), "{out}");
            assert!(!out.contains("content_block_start"), "{out}");
            assert!(
                out.ends_with("\n\n") && out.contains("event: error") && out.contains(refused),
                "{out}"
            );
        }
        for block in [
            r#"{"type":"tool_use","id":"t","name":"Read","input":{}}"#,
            r#"{"type":"server_tool_use","id":"s","name":"web_search","input":{}}"#,
            r#"{"type":"mcp_tool_use","id":"m","name":"search","server_name":"docs","input":{}}"#,
            r#"{"type":"web_search_tool_result","tool_use_id":"s","content":[]}"#,
            r#"{"type":"text","text":"tool_use Bash"}"#,
        ] {
            let stream = format!("{HEAD}{}", start(block));
            assert_eq!(
                every_chunking(&j, stream.as_bytes()),
                (stream.clone(), false),
                "{block}"
            );
        }
    }

    #[test]
    fn the_client_reading_is_what_is_judged() {
        let j = judged(&["Read"], &[]);
        // Escapes, a misleading event name, duplicate keys, invalid UTF-8, a call inside
        // message_start, bare CR line endings: each reaches an SDK as a call of Bash.
        let sneaky = [
            "event: content_block_start\ndata: {\"type\":\"content_block_st\\u0061rt\",\"content_block\":{\"type\":\"tool_use\",\"name\":\"Bash\"}}\n\n".to_owned(),
            "event: ping\ndata: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"tool_use\",\"name\":\"Bash\"}}\n\n".to_owned(),
            "data: {\"type\":\"ping\",\"type\":\"content_block_start\",\"content_block\":{\"type\":\"tool_use\",\"name\":\"Read\",\"name\":\"Bash\"}}\n\n".to_owned(),
            "data: {\"type\":\"message_start\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"name\":\"Bash\"}]}}\n\n".to_owned(),
            "data: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"tool_use\",\"name\":\"Bash\"}}\r\r".to_owned(),
        ];
        for s in &sneaky {
            let (out, stopped) = every_chunking(&j, s.as_bytes());
            assert!(stopped && out.contains("'Bash'"), "{s:?}: {out}");
        }
        let mut invalid_utf8 = b"data: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"tool_use\",\"name\":\"Bash\",\"input\":{\"x\":\"\xff\"}}}\n\n".to_vec();
        let (out, stopped) = run(&j, &invalid_utf8, 7);
        assert!(stopped && String::from_utf8_lossy(&out).contains("'Bash'"));
        // Data that is not JSON stops the stream; so does an event over the bound.
        invalid_utf8.truncate(30);
        invalid_utf8.extend_from_slice(b"\n\n");
        let (out, stopped) = every_chunking(&j, &invalid_utf8);
        assert!(
            stopped && out.starts_with("event: error") && out.contains("not JSON"),
            "{out}"
        );
        let mut check = StreamCheck::new(j.clone());
        assert_eq!(check.feed(HEAD.as_bytes()), Verdict::Pass(Bytes::from(HEAD)));
        let filler = vec![b'a'; 1 << 20];
        check.feed(b"data: {\"type\":\"content_block_start\",\"content_block\":{\"text\":\"");
        let mut stopped = None;
        for _ in 0..20 {
            match check.feed(&filler) {
                Verdict::Pass(b) => assert!(b.is_empty() && check.held() <= MAX_EVENT_BYTES),
                Verdict::Stop(b) => {
                    stopped = Some(b);
                    break;
                }
            }
        }
        let stopped = String::from_utf8(stopped.expect("stopped").to_vec()).unwrap();
        assert!(
            stopped.starts_with("event: error") && stopped.contains("larger than"),
            "{stopped}"
        );
    }

    #[test]
    fn the_tail_at_the_end_of_a_stream_is_judged() {
        let j = judged(&["Read"], &[]);
        let call = |name: &str| {
            format!(
                "data: {{\"type\":\"content_block_start\",\"content_block\":{{\"type\":\"tool_use\",\"name\":\"{name}\"}}}}"
            )
        };
        // The splitter this replaced passed an unterminated tail unchecked.
        for end in ["", "\n", "\r", "\r\n"] {
            let stream = format!("{HEAD}{}{end}", call("Bash"));
            let (out, stopped) = every_chunking(&j, stream.as_bytes());
            assert!(
                stopped && out.starts_with(HEAD) && !out.contains("tool_use"),
                "{end:?}: {out}"
            );
            let stream = format!("{HEAD}{}{end}", call("Read"));
            assert_eq!(
                every_chunking(&j, stream.as_bytes()),
                (stream.clone(), false),
                "{end:?}"
            );
        }
        // A tail cut mid-JSON passes: no client can read it either.
        let stream = format!("{HEAD}data: {{\"type\":\"content_block_st");
        assert_eq!(every_chunking(&j, stream.as_bytes()), (stream.clone(), false));
    }

    #[test]
    fn json_messages_are_judged_block_by_block() {
        let j = judged(&["Read", "web_search"], &[]);
        let msg = |blocks: &str| {
            format!(r#"{{"type":"message","content":[{{"type":"text","text":"hi"}},{blocks}]}}"#)
        };
        assert_eq!(
            j.forbidden_in_message(msg(r#"{"type":"tool_use","name":"Read"}"#).as_bytes()),
            Ok(None)
        );
        assert_eq!(
            j.forbidden_in_message(msg(r#"{"type":"server_tool_use","name":"web_search"}"#).as_bytes()),
            Ok(None)
        );
        assert_eq!(
            j.forbidden_in_message(
                msg(r#"{"type":"server_tool_use","name":"text_editor_code_execution"}"#).as_bytes()
            ),
            Ok(Some("code_execution".into()))
        );
        assert_eq!(
            j.forbidden_in_message(
                msg(r#"{"type":"mcp_tool_use","name":"search","server_name":"docs"}"#).as_bytes()
            ),
            Ok(Some("mcp_connector__mcp.example.com/sse__search".into()))
        );
        assert_eq!(
            j.forbidden_in_message(
                b"{\"content\":[{\"type\":\"tool_use\",\"name\":\"Read\",\"name\":\"Bash\"}]}"
            ),
            Ok(Some("Bash".into()))
        );
        assert_eq!(j.forbidden_in_message(b"not json"), Err(Unreadable));
        assert_eq!(j.forbidden_in_message(b"[]"), Ok(None));
    }

    #[tokio::test]
    async fn the_guard_refuses_json_and_cuts_streams() {
        let guard = |stream| {
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            let judge = Arc::new(AllowDeny::new(&s(&["Read"]), &s(&[])));
            ToolGuard::new(judge, "k".into(), BTreeMap::new(), stream)
        };
        let response = |ct: &str, body: &str| {
            let mut r = Response::new(Either::Left(Full::new(Bytes::from(body.to_owned()))));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            r
        };
        let call = r#"{"content":[{"type":"server_tool_use","name":"web_fetch","input":{}}]}"#;
        let r = guard(false).guard(response("application/json", call)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = guard(false).guard(response("text/plain", "oops")).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_GATEWAY,
            "what cannot be read does not pass"
        );
        let mut gzipped = response("text/event-stream", "\x1f\u{8b}");
        gzipped
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(guard(true).guard(gzipped).await.status(), StatusCode::BAD_GATEWAY);
        let r = guard(false)
            .guard(response("application/json", r#"{"content":[]}"#))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        // A stream sent under another content type is still a stream to the client's SDK.
        let stream = format!("{HEAD}{}", start(r#"{"type":"tool_use","name":"Bash"}"#));
        let r = guard(true)
            .guard(response("application/octet-stream", &stream))
            .await;
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.starts_with(HEAD) && text.contains("permission_error") && !text.contains("Bash\""),
            "{text}"
        );
    }
}
