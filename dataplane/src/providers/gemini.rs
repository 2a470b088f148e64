//! The Gemini API (`generativelanguage.googleapis.com`) as a provider: generateContent,
//! streamGenerateContent (SSE) and countTokens with the provider's key in `x-goog-api-key`,
//! never in the URL. The request's shape (URL, the gateway's own query, the headers sent) is
//! [`crate::gemini::upstream`]'s.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::gemini::Method;
use crate::secret::Secret;

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
    /// The upstream request for `method` on `model`; the error names the provider, never
    /// the key.
    pub fn request(&self, method: Method, model: &str, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        crate::gemini::upstream::api_request(&self.endpoint, &self.key, method, model, body)
            .map_err(|e| format!("provider {}: {e}", self.id))
    }
}
