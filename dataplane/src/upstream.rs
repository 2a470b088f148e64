//! The one HTTP client to providers (hyper + rustls with the webpki roots), and the building
//! of an upstream request from a client request: hop-by-hop headers dropped, the client's
//! credential headers replaced by the provider credential (or, for a `tollgate` provider,
//! forwarded unchanged: the gateway authenticates the virtual key again), everything else
//! forwarded verbatim.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::policy::{ProviderAuth, ProviderEntry};

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

/// The headers a client presents its virtual key in: replaced by the provider credential,
/// or forwarded unchanged to a `tollgate` provider.
const CLIENT_CREDENTIALS: &[&str] = &["authorization", "x-api-key"];

/// Request headers never forwarded: hop-by-hop, a stray Azure-style `api-key`, and
/// `accept-encoding` (the gateway reads usage from the body, so it asks for identity).
const DROPPED: &[&str] = &[
    "host",
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

/// The client's headers a provider may see: everything but hop-by-hop headers, the client's
/// credential headers (its virtual key) and `accept-encoding`. Provider modules start from
/// these and add their own credential.
pub fn forwarded_headers(client_headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client_headers.len());
    copy_headers(client_headers, &mut out, DROPPED);
    for name in CLIENT_CREDENTIALS {
        out.remove(*name);
    }
    out
}

/// Builds the upstream request for `path_and_query` (e.g. `/v1/messages?beta=true`), with
/// the credential `provider.auth` calls for; the error says why not (never a secret).
///
/// `client_key` is the virtual key the client authenticated with; a `tollgate` provider gets
/// exactly that one (as a Bearer token), whatever other credential headers the client sent, so
/// the gateway judges the key the sidecar judged.
pub fn build_request(
    provider: &ProviderEntry,
    method: Method,
    path_and_query: &str,
    client_headers: &HeaderMap,
    client_key: Option<&str>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let provider_key = match &provider.auth {
        ProviderAuth::Key(secret) => {
            let mut key = HeaderValue::from_str(secret.expose()).map_err(|_| {
                format!(
                    "credential of provider {} is not a valid header value",
                    provider.id
                )
            })?;
            key.set_sensitive(true);
            Some(key)
        }
        ProviderAuth::ForwardClientKey => None,
        ProviderAuth::Unreadable(why) => return Err(why.clone()),
    };
    let uri = format!("{}{}", provider.endpoint, path_and_query);
    // A bodiless GET or DELETE (the MCP listen stream, session end) declares no length.
    let declare_length = !body.is_empty() || method == Method::POST;
    let mut req = Request::builder()
        .method(method)
        .uri(&uri)
        .body(Full::new(body.clone()))
        .map_err(|e| format!("bad upstream URL for provider {}: {e}", provider.id))?;
    let headers = req.headers_mut();
    copy_headers(client_headers, headers, DROPPED);
    match provider_key {
        Some(key) => {
            for name in CLIENT_CREDENTIALS {
                headers.remove(*name);
            }
            headers.insert(HeaderName::from_static("x-api-key"), key);
        }
        None => {
            for name in CLIENT_CREDENTIALS {
                headers.remove(*name);
            }
            let key =
                client_key.ok_or_else(|| format!("no authenticated key to forward to {}", provider.id))?;
            let mut bearer = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "the virtual key is not a valid header value".to_owned())?;
            bearer.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, bearer);
        }
    }
    // Usage is read from the body: ask for it uncompressed (a compressed body would pass
    // through unmetered).
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    if declare_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
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
    use crate::secret::Secret;

    fn provider(kind: ProviderKind, auth: ProviderAuth) -> ProviderEntry {
        ProviderEntry {
            id: "p".into(),
            kind,
            endpoint: "https://api.example.com".into(),
            auth,
            timeouts: Timeouts::default(),
        }
    }

    fn client_headers() -> HeaderMap {
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
        h
    }

    fn build(p: &ProviderEntry) -> Result<Request<Full<Bytes>>, String> {
        build_request(
            p,
            Method::POST,
            "/v1/messages?beta=true",
            &client_headers(),
            Some("vk-secret"),
            Bytes::from_static(b"{}"),
        )
    }

    /// What every kind forwards: the path and query, the rest of the headers verbatim, no
    /// hop-by-hop header, identity encoding, the body's own length.
    fn assert_forwarded_verbatim(req: &Request<Full<Bytes>>) {
        assert_eq!(req.uri(), "https://api.example.com/v1/messages?beta=true");
        let out = req.headers();
        assert_eq!(out["anthropic-beta"], "a,b,c");
        assert_eq!(out["anthropic-version"], "2023-06-01");
        assert_eq!(out["x-claude-code-session-id"], "s1");
        assert_eq!(out["content-length"], "2");
        for gone in ["connection", "x-drop-me", "host"] {
            assert!(out.get(gone).is_none(), "{gone} forwarded");
        }
        assert_eq!(
            out["accept-encoding"], "identity",
            "the client's gzip, br is not asked for"
        );
    }

    #[test]
    fn credentials_are_replaced_and_the_rest_forwarded() {
        let p = provider(
            ProviderKind::Anthropic,
            ProviderAuth::Key(Secret::new("sk-upstream")),
        );
        let req = build(&p).unwrap();
        assert_forwarded_verbatim(&req);
        let out = req.headers();
        assert_eq!(out["x-api-key"], "sk-upstream");
        assert_eq!(out.get_all("x-api-key").iter().count(), 1);
        assert!(out.get("authorization").is_none());
    }

    #[test]
    fn a_tollgate_provider_gets_exactly_the_key_that_authenticated() {
        let p = provider(ProviderKind::Tollgate, ProviderAuth::ForwardClientKey);
        let req = build(&p).unwrap();
        assert_forwarded_verbatim(&req);
        let out = req.headers();
        assert_eq!(out["authorization"], "Bearer vk-secret");
        assert!(out.get("x-api-key").is_none());
        assert!(out["authorization"].is_sensitive());

        // Other credentials the client sent (another tenant's key, a header its `Connection`
        // asks to drop) never reach the gateway: it judges the key the sidecar judged.
        let mut mixed = HeaderMap::new();
        mixed.insert("authorization", "Bearer vk-other".parse().unwrap());
        mixed.insert("x-api-key", "vk-mine".parse().unwrap());
        mixed.insert("connection", "authorization".parse().unwrap());
        let req = build_request(&p, Method::GET, "/mcp", &mixed, Some("vk-mine"), Bytes::new()).unwrap();
        assert_eq!(req.uri(), "https://api.example.com/mcp");
        assert_eq!(req.headers()["authorization"], "Bearer vk-mine");
        assert_eq!(req.headers().get_all("authorization").iter().count(), 1);
        assert!(req.headers().get("x-api-key").is_none());
        assert!(
            req.headers().get("content-length").is_none(),
            "a bodiless GET declares no length"
        );
        // Nothing authenticated, nothing forwarded.
        assert!(build_request(&p, Method::GET, "/mcp", &mixed, None, Bytes::new()).is_err());
    }

    #[test]
    fn an_unreadable_credential_is_an_error_without_the_value() {
        let p = provider(
            ProviderKind::Anthropic,
            ProviderAuth::Unreadable("environment variable K is not set".into()),
        );
        assert_eq!(build(&p).unwrap_err(), "environment variable K is not set");
    }
}
