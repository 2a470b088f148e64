//! The Gemini API (`generativelanguage.googleapis.com`): generateContent,
//! streamGenerateContent (SSE) and countTokens, with the provider's key in `x-goog-api-key`
//! (never in the URL, where logs and proxies would keep it).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request};
use http_body_util::Full;

use crate::secret::Secret;
use crate::upstream::forwarded_headers;

/// What a Gemini request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiMethod {
    /// `:generateContent`.
    Generate,
    /// `:streamGenerateContent?alt=sse`.
    StreamGenerate,
    /// `:countTokens`.
    CountTokens,
}

impl GeminiMethod {
    /// The method's URL suffix, query included.
    pub fn suffix(self) -> &'static str {
        match self {
            GeminiMethod::Generate => "generateContent",
            GeminiMethod::StreamGenerate => "streamGenerateContent?alt=sse",
            GeminiMethod::CountTokens => "countTokens",
        }
    }
}

/// A Gemini API provider.
#[derive(Debug)]
pub struct GeminiApi {
    /// Provider id (for error messages).
    pub id: String,
    /// Base URL without a trailing slash (`https://generativelanguage.googleapis.com`).
    pub endpoint: String,
    /// Its API key.
    pub key: Secret,
}

impl GeminiApi {
    /// The upstream request for `method` on `model` (one path segment).
    pub fn request(
        &self,
        method: GeminiMethod,
        model: &str,
        client_headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut key = HeaderValue::from_str(self.key.expose())
            .map_err(|_| format!("credential of provider {} is not a valid header value", self.id))?;
        key.set_sensitive(true);
        let segment = super::vertex::segment(model)?;
        let length = body.len();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "{}/v1beta/models/{segment}:{}",
                self.endpoint,
                method.suffix()
            ))
            .body(Full::new(body))
            .map_err(|e| format!("bad upstream URL for provider {}: {e}", self.id))?;
        let headers = req.headers_mut();
        *headers = forwarded_headers(client_headers);
        headers.insert(HeaderName::from_static("x-goog-api-key"), key);
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_goes_in_a_header_and_the_model_in_one_segment() {
        let api = GeminiApi {
            id: "gemini".into(),
            endpoint: "https://generativelanguage.googleapis.com".into(),
            key: Secret::new("AIza-upstream"),
        };
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", "tg_virtual".parse().unwrap());
        let req = api
            .request(
                GeminiMethod::StreamGenerate,
                "gemini-2.5-pro",
                &h,
                Bytes::from_static(b"{}"),
            )
            .unwrap();
        assert_eq!(
            req.uri(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(req.headers()["x-goog-api-key"], "AIza-upstream");
        assert_eq!(req.headers().get_all("x-goog-api-key").iter().count(), 1);
        assert!(!req.uri().to_string().contains("key="));
        let req = api
            .request(GeminiMethod::CountTokens, "a/../b", &h, Bytes::new())
            .unwrap();
        assert_eq!(
            req.uri(),
            "https://generativelanguage.googleapis.com/v1beta/models/a%2F..%2Fb:countTokens"
        );
        assert!(
            api.request(GeminiMethod::Generate, "..", &h, Bytes::new())
                .is_err()
        );
    }
}
