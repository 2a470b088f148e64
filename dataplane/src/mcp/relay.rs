//! Sidecar mode (`mcp_gateway` in the policy): `/mcp` is relayed to the gateway's `/mcp` once
//! the virtual key has passed the local check. The gateway is authoritative for everything
//! MCP (sessions, which servers and tools a key sees, tool calls, their credentials and
//! audit); the sidecar filters nothing itself, so a stale sidecar policy can refuse a key
//! early but never widen what it may use.
//!
//! - **Request**: method, query, headers (the client's `authorization` / `x-api-key`,
//!   `mcp-session-id`, `mcp-protocol-version`, `accept`, ...) and body go through unchanged,
//!   hop-by-hop headers aside. The body is read whole first, within the bound local MCP
//!   requests have (JSON-RPC messages are small).
//! - **Response**: status, headers (`mcp-session-id` included) and body unchanged, streamed
//!   frame by frame: an SSE answer or the GET listen stream is never held back.
//! - **Gateway unreachable**: HTTP 502 (504 past the provider's `response_headers_ms`) with a
//!   JSON-RPC error naming it.

use std::time::Duration;

use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;

use super::jsonrpc::INTERNAL_ERROR;
use super::{Refusal, read_body};
use crate::body::{ProxyBody, boxed};
use crate::policy::ProviderEntry;
use crate::providers::Wire;
use crate::upstream::{HttpClient, error_chain, response_headers};

/// Relays one `/mcp` request to `gateway` and streams its answer back.
pub(super) async fn relay(
    client: &HttpClient,
    gateway: &ProviderEntry,
    parts: &Parts,
    client_key: Option<&str>,
    body: Incoming,
) -> Result<Response<ProxyBody>, Refusal> {
    let body = read_body(body).await?;
    let path = match parts.uri.query() {
        Some(q) => format!("/mcp?{q}"),
        None => "/mcp".to_owned(),
    };
    let unavailable = |status: StatusCode, detail: String| {
        tracing::warn!(gateway = %gateway.id, %detail, "MCP gateway unavailable");
        Refusal::new(
            status,
            INTERNAL_ERROR,
            format!("tollgate: MCP gateway '{}' is unavailable: {detail}", gateway.id),
        )
    };
    let Wire::Anthropic(api) = &gateway.wire else {
        return Err(unavailable(
            StatusCode::BAD_GATEWAY,
            "the MCP gateway must be a tollgate provider".into(),
        ));
    };
    let request = api
        .request(parts.method.clone(), &path, &parts.headers, client_key, body)
        .map_err(|e| unavailable(StatusCode::BAD_GATEWAY, e))?;
    let limit = Duration::from_millis(gateway.timeouts.response_headers_ms);
    let resp = match tokio::time::timeout(limit, client.request(request)).await {
        Err(_) => {
            return Err(unavailable(
                StatusCode::GATEWAY_TIMEOUT,
                "no answer in time".into(),
            ));
        }
        Ok(Err(e)) => return Err(unavailable(StatusCode::BAD_GATEWAY, error_chain(&e))),
        Ok(Ok(resp)) => resp,
    };
    let (head, body) = resp.into_parts();
    tracing::info!(gateway = %gateway.id, method = %parts.method, status = head.status.as_u16(), "MCP request relayed to the gateway");
    let mut out = Response::new(Either::Right(boxed(body)));
    *out.status_mut() = head.status;
    *out.headers_mut() = response_headers(&head.headers);
    Ok(out)
}
