//! The one HTTP client to providers (hyper + rustls with the webpki roots), and the building
//! of an upstream request from a client request: hop-by-hop and credential headers dropped,
//! the provider credential set, everything else forwarded verbatim.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::policy::ProviderEntry;
use crate::secret::Secret;

/// The shared client type.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the client: TLS 1.2/1.3 via rustls (ring), HTTP/1.1 keep-alive pool.
pub fn build_client() -> anyhow::Result<HttpClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}

/// Request headers never forwarded: hop-by-hop, the client's own credentials, and
/// `accept-encoding` (the gateway reads usage from the body, so it asks for identity).
const DROPPED: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "api-key",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "accept-encoding",
];

/// Response headers not copied back to the client (hop-by-hop).
const DROPPED_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, dropped: &[&str]) {
    let listed_in_connection: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for (name, value) in from {
        let n = name.as_str();
        if dropped.contains(&n) || listed_in_connection.iter().any(|c| c == n) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Copies an upstream response's headers for the client.
pub fn response_headers(from: &HeaderMap) -> HeaderMap {
    let mut to = HeaderMap::with_capacity(from.len());
    copy_headers(from, &mut to, DROPPED_RESPONSE);
    to
}

/// Builds the upstream request for `path_and_query` (e.g. `/v1/messages?beta=true`).
pub fn build_request(
    provider: &ProviderEntry,
    credential: &Secret,
    method: Method,
    path_and_query: &str,
    client_headers: &HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let uri = format!("{}{}", provider.endpoint, path_and_query);
    let mut req = Request::builder()
        .method(method)
        .uri(&uri)
        .body(Full::new(body.clone()))
        .map_err(|e| format!("bad upstream URL for provider {}: {e}", provider.id))?;
    let headers = req.headers_mut();
    copy_headers(client_headers, headers, DROPPED);
    let mut key = HeaderValue::from_str(credential.expose()).map_err(|_| {
        format!(
            "credential of provider {} is not a valid header value",
            provider.id
        )
    })?;
    key.set_sensitive(true);
    headers.insert(HeaderName::from_static("x-api-key"), key);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(req)
}

/// An error and its causes on one line, for logs and client-facing messages (transport
/// errors only carry URLs and I/O reasons, never credentials).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::{ProviderKind, Timeouts};

    #[test]
    fn credentials_are_replaced_and_the_rest_forwarded() {
        let provider = ProviderEntry {
            id: "p".into(),
            kind: ProviderKind::Anthropic,
            endpoint: "https://api.example.com".into(),
            credential: Err("unused".into()),
            timeouts: Timeouts::default(),
        };
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer vk-secret".parse().unwrap());
        h.insert("x-api-key", "vk-secret".parse().unwrap());
        h.insert("anthropic-beta", "a,b,c".parse().unwrap());
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());
        h.insert("x-claude-code-session-id", "s1".parse().unwrap());
        h.insert("accept-encoding", "gzip, br".parse().unwrap());
        h.insert("connection", "keep-alive, x-drop-me".parse().unwrap());
        h.insert("x-drop-me", "1".parse().unwrap());
        h.insert("host", "localhost:8080".parse().unwrap());
        let req = build_request(
            &provider,
            &Secret::new("sk-upstream"),
            Method::POST,
            "/v1/messages?beta=true",
            &h,
            Bytes::from_static(b"{}"),
        )
        .unwrap();
        assert_eq!(req.uri(), "https://api.example.com/v1/messages?beta=true");
        let out = req.headers();
        assert_eq!(out["x-api-key"], "sk-upstream");
        assert!(out.get("authorization").is_none());
        assert_eq!(out["anthropic-beta"], "a,b,c");
        assert_eq!(out["anthropic-version"], "2023-06-01");
        assert_eq!(out["x-claude-code-session-id"], "s1");
        assert_eq!(out["content-length"], "2");
        for gone in ["accept-encoding", "connection", "x-drop-me", "host"] {
            assert!(out.get(gone).is_none(), "{gone} forwarded");
        }
    }
}
