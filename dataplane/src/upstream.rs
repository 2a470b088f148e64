//! The one HTTP client to providers (hyper + rustls with the webpki roots), and which of a
//! client's headers a provider may see: hop-by-hop headers, the client's credential headers and
//! `accept-encoding` are dropped, everything else is forwarded verbatim. The provider modules
//! ([`crate::providers`]) add their own credential.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
const CLIENT_CREDENTIALS: &[&str] = &["authorization", "x-api-key", "x-goog-api-key"];

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
