//! The built-in tool policy: per virtual key (and team), `tools` allow/deny globs decide which
//! entries of a `/v1/messages` request's `tools` array reach the provider.
//!
//! **What it does.** Before forwarding, every tool whose `name` the policy does not permit
//! (deny wins; an empty allow list permits everything not denied) is cut out of the `tools`
//! array by splicing bytes: every kept tool, and every byte outside the array, reaches the
//! provider byte for byte (prompt caching keeps working for the kept prefix). A `tool_choice`
//! that names a removed tool is refused (400). As defence in depth, the response is watched:
//! a `tool_use` block naming a tool the policy does not permit ends an SSE stream with an
//! `error` event (`permission_error`) in place of that block, and turns a JSON response into
//! a 403 `permission_error`, so the agent never receives the call. Requests the gateway
//! cannot parse while a policy applies are refused rather than forwarded unfiltered.
//!
//! **What it does not guarantee.** It governs what the *model* is offered and what the
//! gateway lets back; it is not a sandbox. The agent runs tools on the engineer's machine: a
//! modified or misconfigured client can still run anything locally, and a permitted tool
//! (e.g. an MCP tool, or `Bash` when only `Write` is removed) can reach the same effect as a
//! removed one (`Bash` can write files). Tool names are matched as the client declares them,
//! so the policy must name the agent's tools as that agent calls them (Claude Code: `Bash`,
//! `Write`, `Edit`, `mcp__<server>__<tool>`, ...). Earlier turns in `messages` that already
//! hold `tool_use` blocks are left as they are. Text the model writes is not inspected.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::error_body;
use crate::denial::Denial;
use crate::policy::KeyEntry;
use crate::server::proxy::{ProxyBody, boxed};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest non-streaming response inspected; a larger one is refused while a policy applies.
const MAX_JSON_RESPONSE: usize = 32 << 20;

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_choice: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// Watches a response for calls of tools the key's policy removed; see the module docs.
pub struct ToolGuard {
    key: Arc<KeyEntry>,
}

/// Removes the tools `key` may not use from a Messages body. Returns the body to forward and,
/// when a tool policy applies, the guard for the response. Bodies without a policy pass
/// through untouched (not even parsed).
pub fn filter_request(key: &Arc<KeyEntry>, body: Bytes) -> Result<(Bytes, Option<ToolGuard>), Denial> {
    if !key.has_tool_policy() {
        return Ok((body, None));
    }
    let (out, removed) = filter_tools(&body, |name| key.keeps_tool(name))?;
    if !removed.is_empty() {
        tracing::info!(removed = ?removed, "built-in tools removed by policy");
    }
    Ok((out.unwrap_or(body), Some(ToolGuard { key: key.clone() })))
}

/// The body with every tool `keep` rejects cut out of `tools` (`None`: nothing to cut), and
/// the names removed.
pub fn filter_tools(
    body: &[u8],
    keep: impl Fn(&str) -> bool,
) -> Result<(Option<Bytes>, Vec<String>), Denial> {
    let invalid = |detail: String| Denial::InvalidRequest { detail };
    let top: Top<'_> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("body is not a valid JSON object: {e}")))?;
    let Some(raw_tools) = top.tools else {
        return Ok((None, Vec::new()));
    };
    let tools: Vec<&RawValue> = match serde_json::from_str::<Option<Vec<&RawValue>>>(raw_tools.get()) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok((None, Vec::new())),
        Err(e) => return Err(invalid(format!("tools: must be an array: {e}"))),
    };
    let mut kept = Vec::with_capacity(tools.len());
    let mut removed = Vec::new();
    for t in tools {
        let named: Named<'_> = serde_json::from_str(t.get())
            .map_err(|e| invalid(format!("tools: each tool must be an object: {e}")))?;
        match named.name {
            Some(n) if !keep(&n) => removed.push(n.into_owned()),
            _ => kept.push(t),
        }
    }
    if let Some(choice) = top.tool_choice {
        if let Ok(Named { name: Some(n) }) = serde_json::from_str::<Named<'_>>(choice.get()) {
            if removed.iter().any(|r| *r == n) {
                return Err(invalid(format!(
                    "tool_choice names tool '{n}', which the tool policy of this virtual key removes"
                )));
            }
        }
    }
    if removed.is_empty() {
        return Ok((None, removed));
    }
    // RawValues borrow from `body`, so their addresses locate them in it.
    let offset = |r: &RawValue| r.get().as_ptr() as usize - body.as_ptr() as usize;
    let start = offset(raw_tools);
    let end = start + raw_tools.get().len();
    let mut out = BytesMut::with_capacity(body.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(b"[");
    for (i, t) in kept.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(t.get().as_bytes());
    }
    out.extend_from_slice(b"]");
    out.extend_from_slice(&body[end..]);
    Ok((Some(out.freeze()), removed))
}

impl ToolGuard {
    /// Wraps a successful response so that a `tool_use` of a removed tool never reaches the
    /// client: SSE is checked event by event as it streams; JSON is read whole and checked.
    pub async fn guard(self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        if !resp.status().is_success() {
            return resp;
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let request_id = resp
            .headers()
            .get("x-tollgate-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let (parts, body) = resp.into_parts();
        if content_type.starts_with("text/event-stream") {
            let guarded = boxed(SseGuard {
                inner: Some(body),
                pending: BytesMut::new(),
                key: self.key,
            });
            return Response::from_parts(parts, Either::Right(guarded));
        }
        if !content_type.starts_with("application/json") {
            return Response::from_parts(parts, body);
        }
        let bytes = match Limited::new(body, MAX_JSON_RESPONSE).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                tracing::warn!(error = %e, "response could not be read for the tool policy check");
                return refusal(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "tollgate: the provider's response could not be checked against the tool policy",
                    &request_id,
                );
            }
        };
        if let Some(name) = forbidden_in_message(&bytes, &self.key) {
            tracing::warn!(tool = %name, "response tool_use of a removed tool refused");
            return refusal(
                StatusCode::FORBIDDEN,
                "permission_error",
                &refused_message(&name, &self.key.id),
                &request_id,
            );
        }
        Response::from_parts(parts, Either::Left(Full::new(bytes)))
    }
}

fn refused_message(tool: &str, key_id: &str) -> String {
    format!(
        "tollgate: the model called tool '{tool}', which the tool policy of virtual key '{key_id}' removes; the response was stopped"
    )
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

/// The first `tool_use` block of a JSON message naming a tool the key's policy removes.
fn forbidden_in_message(body: &[u8], key: &KeyEntry) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("content")?
        .as_array()?
        .iter()
        .find_map(|b| forbidden_block(b, key))
}

fn forbidden_block(block: &Value, key: &KeyEntry) -> Option<String> {
    if block.get("type")?.as_str()? != "tool_use" {
        return None;
    }
    let name = block.get("name")?.as_str()?;
    (!key.keeps_tool(name)).then(|| name.to_owned())
}

/// The tool of a `content_block_start` SSE event opening a forbidden `tool_use` block.
fn forbidden_in_event(event: &[u8], key: &KeyEntry) -> Option<String> {
    // Cheap pre-check: most events are deltas.
    if !event.windows(19).any(|w| w == b"content_block_start") {
        return None;
    }
    let text = std::str::from_utf8(event).ok()?;
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n");
    let v: Value = serde_json::from_str(&data).ok()?;
    if v.get("type")?.as_str()? != "content_block_start" {
        return None;
    }
    forbidden_block(v.get("content_block")?, key)
}

/// Length of the complete SSE events at the start of `buf` (through the last blank line).
fn complete_events_len(buf: &[u8]) -> usize {
    let mut end = 0;
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                end = i + 1;
            }
            line_start = i + 1;
        }
    }
    end
}

/// Splits complete events (each ending with its blank line).
fn split_events(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                out.push(&buf[start..=i]);
                start = i + 1;
            }
            line_start = i + 1;
        }
    }
    out
}

/// Passes SSE through whole event by whole event, stopping at a forbidden `tool_use`.
struct SseGuard {
    inner: Option<ProxyBody>,
    pending: BytesMut,
    key: Arc<KeyEntry>,
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
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.inner = None;
                    if this.pending.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = this.pending.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    this.pending.extend_from_slice(&data);
                    let n = complete_events_len(&this.pending);
                    if n == 0 {
                        continue;
                    }
                    let ready = this.pending.split_to(n).freeze();
                    let mut pass = 0;
                    for event in split_events(&ready) {
                        if let Some(name) = forbidden_in_event(event, &this.key) {
                            tracing::warn!(tool = %name, "streamed tool_use of a removed tool refused");
                            // Dropping the upstream body ends the exchange (accounted as cut).
                            this.inner = None;
                            this.pending.clear();
                            let error = serde_json::json!({
                                "type": "error",
                                "error": {"type": "permission_error", "message": refused_message(&name, &this.key.id)},
                            });
                            let mut out = BytesMut::from(&ready[..pass]);
                            out.extend_from_slice(format!("event: error\ndata: {error}\n\n").as_bytes());
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                        pass += event.len();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(ready))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep_unless(denied: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |n| !denied.contains(&n)
    }

    #[test]
    fn removes_only_denied_tools_and_keeps_other_bytes() {
        let body = br#"{"model":"m", "tools" : [ {"name":"Bash","x":1}, {"name":"Read" ,"input_schema":{"a":[1, 2]}},{"name":"Wr\u0069te"} ], "tool_choice":{"type":"auto"}}"#;
        let (out, removed) = filter_tools(body, keep_unless(&["Bash", "Write"])).unwrap();
        assert_eq!(removed, vec!["Bash".to_string(), "Write".to_string()]);
        assert_eq!(
            std::str::from_utf8(&out.unwrap()).unwrap(),
            r#"{"model":"m", "tools" : [{"name":"Read" ,"input_schema":{"a":[1, 2]}}], "tool_choice":{"type":"auto"}}"#
        );
        let (none, removed) = filter_tools(body, |_| true).unwrap();
        assert!(none.is_none() && removed.is_empty());
        let (out, _) = filter_tools(body, |_| false).unwrap();
        assert!(
            std::str::from_utf8(&out.unwrap())
                .unwrap()
                .contains(r#""tools" : []"#)
        );
    }

    #[test]
    fn tool_choice_of_a_removed_tool_and_bad_bodies_are_refused() {
        let body = br#"{"tools":[{"name":"Bash"}],"tool_choice":{"type":"tool","name":"Bash"}}"#;
        assert!(matches!(
            filter_tools(body, keep_unless(&["Bash"])),
            Err(Denial::InvalidRequest { .. })
        ));
        assert!(filter_tools(b"{nope", |_| true).is_err());
        assert!(filter_tools(br#"{"tools":{"a":1}}"#, |_| true).is_err());
        assert!(
            filter_tools(br#"{"tools":[{"name":"a"}],"tools":[]}"#, |_| true).is_err(),
            "duplicate keys are refused, not forwarded unfiltered"
        );
        assert_eq!(filter_tools(br#"{"tools":null}"#, |_| false).unwrap().0, None);
    }

    #[test]
    fn sse_event_splitting() {
        let s = b"event: a\ndata: 1\n\nevent: b\r\ndata: 2\r\n\r\nevent: c\ndata: 3";
        let n = complete_events_len(s);
        assert_eq!(&s[..n], b"event: a\ndata: 1\n\nevent: b\r\ndata: 2\r\n\r\n");
        assert_eq!(split_events(&s[..n]).len(), 2);
    }
}
