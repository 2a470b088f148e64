//! Cloud error answers as Anthropic errors, for Vertex AI (Google errors) and Foundry (Azure
//! errors).
//!
//! The response status is chosen from the upstream status alone (Google fixes one HTTP status
//! per canonical code), so it is known before the body is read; the body is then read (at most
//! [`MAX_ERROR_BODY`]) and
//! * an Anthropic error body (`{"type":"error",...}`) passes unchanged (Claude Code matches
//!   its wording, e.g. "prompt is too long");
//! * a Google error (`{"error":{"code","message","status"}}`, or a one-element array of it)
//!   or an Azure error (`{"error":{"code","message"}}`) becomes Anthropic error JSON with the
//!   message verbatim and the type of [`TABLE`];
//! * anything else becomes an `api_error` naming the provider and the status.
//!
//! Never passed: a 401. The upstream refused the gateway's own credential, and a 401 makes
//! Claude Code ask its user to log in again; it becomes 502 `api_error` ([`UNAUTHENTICATED_MESSAGE`]).
//! A 503 becomes 529 `overloaded_error`, which Claude Code retries as Anthropic's overload.
//! Every other header (`retry-after` included) is kept.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::anthropic::error::error_body;
use crate::body::{BoxedBody, StreamError, boxed};
use crate::upstream::response_headers;

/// Largest error body read for mapping.
pub const MAX_ERROR_BODY: usize = 256 * 1024;

/// The message that replaces an upstream 401 (`{provider}` is the provider's name).
pub const UNAUTHENTICATED_MESSAGE: &str = "the gateway's {provider} credentials were refused by {service}";

/// One row: Google canonical code, the HTTP status upstream sends for it, the status the client
/// gets, the Anthropic error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Google's canonical code (`status` of a Google error).
    pub google: &'static str,
    /// The HTTP status upstream answers with.
    pub upstream: u16,
    /// The HTTP status the client gets.
    pub client: u16,
    /// The Anthropic error type.
    pub error_type: &'static str,
}

const fn row(google: &'static str, upstream: u16, client: u16, error_type: &'static str) -> Row {
    Row {
        google,
        upstream,
        client,
        error_type,
    }
}

/// The mapping, one row per Google canonical code the providers answer with.
pub const TABLE: &[Row] = &[
    row("INVALID_ARGUMENT", 400, 400, "invalid_request_error"),
    row("FAILED_PRECONDITION", 400, 400, "invalid_request_error"),
    row("OUT_OF_RANGE", 400, 400, "invalid_request_error"),
    // The gateway's credential was refused: never a 401 to Claude Code (see the module doc).
    row("UNAUTHENTICATED", 401, 502, "api_error"),
    row("PERMISSION_DENIED", 403, 403, "permission_error"),
    row("NOT_FOUND", 404, 404, "not_found_error"),
    row("ABORTED", 409, 409, "api_error"),
    row("ALREADY_EXISTS", 409, 409, "invalid_request_error"),
    row("RESOURCE_EXHAUSTED", 429, 429, "rate_limit_error"),
    row("CANCELLED", 499, 500, "api_error"),
    row("INTERNAL", 500, 500, "api_error"),
    row("UNKNOWN", 500, 500, "api_error"),
    row("DATA_LOSS", 500, 500, "api_error"),
    row("UNIMPLEMENTED", 501, 501, "api_error"),
    // Google's overload: Anthropic's overload status, which clients retry with backoff.
    row("UNAVAILABLE", 503, 529, "overloaded_error"),
    // A timeout upstream; the SDKs retry any 5xx. Anthropic has no timeout type to name.
    row("DEADLINE_EXCEEDED", 504, 504, "api_error"),
];

/// The status the client gets for an upstream error status.
pub fn client_status(upstream: StatusCode) -> StatusCode {
    match upstream.as_u16() {
        401 => StatusCode::BAD_GATEWAY,
        503 => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        // 499 (client closed) is not a status to hand a client.
        499 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => upstream,
    }
}

/// The Anthropic error type for an upstream status without a recognised canonical code.
fn type_for_status(upstream: u16) -> &'static str {
    match upstream {
        400 | 409 | 422 => "invalid_request_error",
        401 => "api_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ if upstream < 500 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Which cloud answered: names it in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Google Vertex AI.
    Vertex,
    /// Azure AI Foundry.
    Foundry,
}

impl Cloud {
    fn service(self) -> &'static str {
        match self {
            Cloud::Vertex => "Vertex AI",
            Cloud::Foundry => "Azure AI Foundry",
        }
    }
    fn credentials(self) -> &'static str {
        match self {
            Cloud::Vertex => "Google",
            Cloud::Foundry => "Azure",
        }
    }

    /// The message that replaces a 401.
    pub fn unauthenticated_message(self) -> String {
        UNAUTHENTICATED_MESSAGE
            .replace("{provider}", self.credentials())
            .replace("{service}", self.service())
    }
}

/// The Anthropic error body for an upstream error `body` with status `upstream`: `None` when it
/// is already an Anthropic error that passes unchanged.
pub fn map_error_body(cloud: Cloud, upstream: StatusCode, body: &[u8], request_id: &str) -> Option<Bytes> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let is_anthropic = parsed
        .as_ref()
        .is_some_and(|v| v.get("type").and_then(Value::as_str) == Some("error") && v.get("error").is_some());
    if upstream.as_u16() == 401 {
        return Some(error_body(
            "api_error",
            &cloud.unauthenticated_message(),
            request_id,
        ));
    }
    if is_anthropic {
        return None;
    }
    let error = parsed.as_ref().and_then(|v| match v {
        Value::Array(items) if items.len() == 1 => items[0].get("error"),
        Value::Object(_) => v.get("error"),
        _ => None,
    });
    let status_name = error.and_then(|e| e.get("status")).and_then(Value::as_str);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let error_type = status_name
        .and_then(|s| TABLE.iter().find(|r| r.google == s))
        .map(|r| r.error_type)
        .unwrap_or_else(|| type_for_status(upstream.as_u16()));
    let message = match message {
        Some(m) => m.to_owned(),
        None => format!(
            "{} answered {} without a readable error",
            cloud.service(),
            upstream.as_u16()
        ),
    };
    Some(error_body(error_type, &message, request_id))
}

/// The upstream's request id, for the Anthropic error body.
fn request_id(headers: &http::HeaderMap) -> String {
    ["request-id", "x-request-id", "apim-request-id", "x-ms-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::to_owned)
        .unwrap_or_else(|| "req_unavailable".to_owned())
}

/// The client's response for an upstream response: 2xx unchanged (headers filtered of
/// hop-by-hop ones), errors mapped (see the module doc).
pub fn map_response<B>(cloud: Cloud, resp: Response<B>) -> Response<BoxedBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = resp.into_parts();
    let mut headers = response_headers(&parts.headers);
    if parts.status.is_success() || parts.status.is_informational() || parts.status.is_redirection() {
        let mut out = Response::new(boxed(body));
        *out.status_mut() = parts.status;
        *out.headers_mut() = headers;
        return out;
    }
    let upstream = parts.status;
    let rid = request_id(&parts.headers);
    let fut = async move {
        let bytes = match Limited::new(body, MAX_ERROR_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            // Cut or too large: map what cannot be read to a generic error below.
            Err(_) => Bytes::new(),
        };
        Ok(map_error_body(cloud, upstream, &bytes, &rid).unwrap_or(bytes))
    };
    // The body changes length; an Anthropic body is JSON either way.
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut out = Response::new(boxed(Deferred(Some(Box::pin(fut)))));
    *out.status_mut() = client_status(upstream);
    *out.headers_mut() = headers;
    out
}

type BytesFuture = Pin<Box<dyn Future<Output = Result<Bytes, StreamError>> + Send>>;

/// A body of one chunk computed by a future.
struct Deferred(Option<BytesFuture>);

impl Body for Deferred {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let Some(fut) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.0 = None;
                Poll::Ready(Some(r.map(Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http_body_util::Full;
    use serde_json::json;

    pub(crate) async fn run(
        cloud: Cloud,
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, http::HeaderMap, Value, Bytes) {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = b.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let out = map_response(cloud, resp);
        let status = out.status().as_u16();
        let headers = out.headers().clone();
        let bytes = out.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, v, bytes)
    }

    fn google(code: u16, status: &str, message: &str) -> String {
        json!({"error": {"code": code, "message": message, "status": status}}).to_string()
    }

    /// Runs one table row through the mapping, as an object and as a one-element array.
    async fn check_row(google_status: &str, upstream: u16, client: u16, error_type: &str) {
        let row = TABLE.iter().find(|r| r.google == google_status).unwrap();
        assert_eq!(
            (row.upstream, row.client, row.error_type),
            (upstream, client, error_type)
        );
        let body = google(upstream, google_status, "the message, verbatim");
        let array = format!("[{body}]");
        for b in [body, array] {
            let (status, headers, v, _) = run(
                Cloud::Vertex,
                upstream,
                &[
                    ("retry-after", "7"),
                    ("x-request-id", "rid-1"),
                    ("content-length", "999"),
                ],
                &b,
            )
            .await;
            assert_eq!(status, client, "{google_status}");
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], error_type, "{google_status}");
            assert_eq!(v["request_id"], "rid-1");
            assert_eq!(headers["retry-after"], "7");
            assert!(headers.get("content-length").is_none());
            if upstream == 401 {
                assert_eq!(
                    v["error"]["message"],
                    "the gateway's Google credentials were refused by Vertex AI"
                );
            } else {
                assert_eq!(v["error"]["message"], "the message, verbatim");
            }
        }
    }

    #[tokio::test]
    async fn invalid_argument_is_400_invalid_request() {
        check_row("INVALID_ARGUMENT", 400, 400, "invalid_request_error").await;
    }
    #[tokio::test]
    async fn failed_precondition_is_400_invalid_request() {
        check_row("FAILED_PRECONDITION", 400, 400, "invalid_request_error").await;
    }
    #[tokio::test]
    async fn out_of_range_is_400_invalid_request() {
        check_row("OUT_OF_RANGE", 400, 400, "invalid_request_error").await;
    }
    #[tokio::test]
    async fn unauthenticated_is_502_never_401() {
        check_row("UNAUTHENTICATED", 401, 502, "api_error").await;
    }
    #[tokio::test]
    async fn permission_denied_is_403_permission_error() {
        check_row("PERMISSION_DENIED", 403, 403, "permission_error").await;
    }
    #[tokio::test]
    async fn not_found_is_404_not_found_error() {
        check_row("NOT_FOUND", 404, 404, "not_found_error").await;
    }
    #[tokio::test]
    async fn aborted_is_409_api_error() {
        check_row("ABORTED", 409, 409, "api_error").await;
    }
    #[tokio::test]
    async fn already_exists_is_409_invalid_request() {
        check_row("ALREADY_EXISTS", 409, 409, "invalid_request_error").await;
    }
    #[tokio::test]
    async fn resource_exhausted_is_429_rate_limit_error() {
        check_row("RESOURCE_EXHAUSTED", 429, 429, "rate_limit_error").await;
    }
    #[tokio::test]
    async fn cancelled_is_500_api_error() {
        check_row("CANCELLED", 499, 500, "api_error").await;
    }
    #[tokio::test]
    async fn internal_is_500_api_error() {
        check_row("INTERNAL", 500, 500, "api_error").await;
    }
    #[tokio::test]
    async fn unknown_is_500_api_error() {
        check_row("UNKNOWN", 500, 500, "api_error").await;
    }
    #[tokio::test]
    async fn data_loss_is_500_api_error() {
        check_row("DATA_LOSS", 500, 500, "api_error").await;
    }
    #[tokio::test]
    async fn unimplemented_is_501_api_error() {
        check_row("UNIMPLEMENTED", 501, 501, "api_error").await;
    }
    #[tokio::test]
    async fn unavailable_is_529_overloaded() {
        check_row("UNAVAILABLE", 503, 529, "overloaded_error").await;
    }
    #[tokio::test]
    async fn deadline_exceeded_is_504_api_error() {
        check_row("DEADLINE_EXCEEDED", 504, 504, "api_error").await;
    }

    #[test]
    fn every_row_is_tested_above() {
        // A new row needs its own test: keep this count in step with the tests above.
        assert_eq!(TABLE.len(), 16);
    }

    #[tokio::test]
    async fn an_anthropic_error_passes_byte_for_byte() {
        let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"},"request_id":"req_1"}"#;
        let (status, _, _, bytes) = run(Cloud::Vertex, 400, &[], body).await;
        assert_eq!(status, 400);
        assert_eq!(&bytes[..], body.as_bytes());
        // A 529 from the model too.
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let (status, _, _, bytes) = run(Cloud::Vertex, 529, &[], body).await;
        assert_eq!(status, 529);
        assert_eq!(&bytes[..], body.as_bytes());
    }

    #[tokio::test]
    async fn an_anthropic_401_still_becomes_502() {
        let body =
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        let (status, _, v, _) = run(Cloud::Foundry, 401, &[], body).await;
        assert_eq!(status, 502);
        assert_eq!(
            v["error"]["message"],
            "the gateway's Azure credentials were refused by Azure AI Foundry"
        );
    }

    #[tokio::test]
    async fn azure_errors_map_by_status() {
        let body = r#"{"error":{"code":"429","message":"Rate limit is exceeded. Try again in 3 seconds."}}"#;
        let (status, h, v, _) = run(Cloud::Foundry, 429, &[("retry-after", "3")], body).await;
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (429, Some("rate_limit_error"))
        );
        assert_eq!(
            v["error"]["message"],
            "Rate limit is exceeded. Try again in 3 seconds."
        );
        assert_eq!(h["retry-after"], "3");
        let body = r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#;
        let (status, _, v, _) = run(Cloud::Foundry, 404, &[], body).await;
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (404, Some("not_found_error"))
        );
        let (status, _, v, _) = run(
            Cloud::Foundry,
            503,
            &[],
            r#"{"error":{"code":"ServiceUnavailable","message":"busy"}}"#,
        )
        .await;
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (529, Some("overloaded_error"))
        );
    }

    #[tokio::test]
    async fn unreadable_bodies_become_api_errors_and_success_passes() {
        let (status, _, v, _) = run(Cloud::Vertex, 502, &[], "<html>bad gateway</html>").await;
        assert_eq!(status, 502);
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(
            v["error"]["message"],
            "Vertex AI answered 502 without a readable error"
        );
        let (status, _, _, bytes) = run(Cloud::Vertex, 200, &[], "event: ping\ndata: {}\n\n").await;
        assert_eq!(status, 200);
        assert_eq!(&bytes[..], b"event: ping\ndata: {}\n\n");
    }
}
