//! The request to the Gemini API itself (`generativelanguage.googleapis.com`).
//!
//! * URL: `{endpoint}/v1beta/models/{model}:{method}`, `?alt=sse` for a stream
//!   (<https://ai.google.dev/api/generate-content>). The model is one percent-encoded path
//!   segment ([`crate::providers::vertex::segment`]), its `models/` prefix dropped.
//! * Query: built by the gateway, never the client's: only `alt=sse` for a stream. A client's
//!   `$fields`/`fields` (a response field mask) could strip `usageMetadata` from the answer,
//!   and `alt=json` on a stream would turn the SSE into a JSON array the tap does not read;
//!   the client's `key` is its virtual key. For the same reason the caller must not forward
//!   an `X-Goog-FieldMask` header.
//! * Headers: `content-type`, `accept-encoding: identity` (the tap reads plain bytes),
//!   `content-length` and `x-goog-api-key: <provider key>` (marked sensitive).
//! * Body: the client's, unchanged (after [`super::tools::filter_request`]).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Uri};
use http_body_util::Full;

use super::bare_model;
use super::request::{KEY_HEADER, Method};
use crate::providers::vertex::segment;
use crate::secret::Secret;

/// The Gemini API's endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://generativelanguage.googleapis.com";

/// `{endpoint}/v1beta/models/{model}:{method}` (`?alt=sse` for a stream); the error says
/// which value is unusable.
pub fn api_url(endpoint: &str, method: Method, model: &str) -> Result<String, String> {
    let base = endpoint.trim_end_matches('/');
    if !(base.starts_with("https://") || base.starts_with("http://")) || base.contains(['?', '#']) {
        return Err(format!(
            "Gemini API endpoint {endpoint:?} is not an http(s) URL without a query"
        ));
    }
    let url = format!(
        "{base}/v1beta/models/{}:{}{}",
        segment(bare_model(model))?,
        method.name(),
        if method.is_stream() { "?alt=sse" } else { "" }
    );
    url.parse::<Uri>()
        .map_err(|e| format!("Gemini API URL for endpoint {endpoint:?} is invalid: {e}"))?;
    Ok(url)
}

/// The upstream request for `method` on `model` with the provider's `key`; the error is for
/// the operator (never the key).
pub fn api_request(
    endpoint: &str,
    key: &Secret,
    method: Method,
    model: &str,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let url = api_url(endpoint, method, model)?;
    let mut key = HeaderValue::from_str(key.expose())
        .map_err(|_| "the Gemini API key is not a valid header value".to_owned())?;
    key.set_sensitive(true);
    let length = body.len();
    let mut req = Request::builder()
        .method(http::Method::POST)
        .uri(&url)
        .body(Full::new(body))
        .map_err(|e| format!("bad Gemini API URL {url}: {e}"))?;
    let headers = req.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(KEY_HEADER, key);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_for_each_method() {
        let u = |m, model| api_url(DEFAULT_ENDPOINT, m, model).unwrap();
        assert_eq!(
            u(Method::Generate, "gemini-2.5-pro"),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent"
        );
        assert_eq!(
            u(Method::StreamGenerate, "models/gemini-2.5-flash"),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            api_url("http://127.0.0.1:9/", Method::CountTokens, "m").unwrap(),
            "http://127.0.0.1:9/v1beta/models/m:countTokens"
        );
        // One encoded segment, whatever the model says.
        assert!(
            u(Method::Generate, "../x:y?key=z").ends_with("/models/..%2Fx%3Ay%3Fkey%3Dz:generateContent")
        );
        assert!(api_url(DEFAULT_ENDPOINT, Method::Generate, "..").is_err());
        assert!(api_url(DEFAULT_ENDPOINT, Method::Generate, "models/").is_err());
        for bad in [
            "generativelanguage.googleapis.com",
            "ftp://x",
            "https://x/?a=b",
            "https://bad host",
        ] {
            assert!(api_url(bad, Method::Generate, "m").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_carries_the_provider_key_only() {
        let body = Bytes::from_static(br#"{"contents":[]}"#);
        let req = api_request(
            DEFAULT_ENDPOINT,
            &Secret::new("AIza-provider"),
            Method::StreamGenerate,
            "gemini-2.5-pro",
            body.clone(),
        )
        .unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().query(), Some("alt=sse"));
        let h = req.headers();
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept-encoding",
                "content-length",
                "content-type",
                "x-goog-api-key"
            ]
        );
        assert_eq!(h["x-goog-api-key"], "AIza-provider");
        assert!(h["x-goog-api-key"].is_sensitive());
        assert_eq!(h["content-length"], body.len().to_string().as_str());
        let err = api_request(
            DEFAULT_ENDPOINT,
            &Secret::new("bad\nkey-secret"),
            Method::Generate,
            "m",
            body,
        )
        .unwrap_err();
        assert!(!err.contains("key-secret"), "{err}");
    }
}
