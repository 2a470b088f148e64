//! The OpenAI API and OpenAI-compatible ones (vLLM, Azure OpenAI's v1 API, ...): Responses and
//! Chat Completions requests pass as they are, with the provider's key as a Bearer token.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request};
use http_body_util::Full;

use crate::secret::Secret;
use crate::upstream::forwarded_headers;

/// Client headers an OpenAI-format provider gets (besides `x-codex-*`): the body's type, the
/// streaming accept, the beta opt-in, idempotency, and the agent's attribution headers.
const FORWARDED: &[&str] = &[
    "content-type",
    "accept",
    "openai-beta",
    "idempotency-key",
    "user-agent",
    "originator",
    "session-id",
    "session_id",
    "thread-id",
    "x-client-request-id",
];

/// An OpenAI-format provider.
#[derive(Debug)]
pub struct OpenAiApi {
    /// Provider id (for error messages).
    pub id: String,
    /// Base URL without `/v1` and without a trailing slash (`https://api.openai.com`).
    pub endpoint: String,
    /// Its API key.
    pub key: Secret,
}

impl OpenAiApi {
    /// The upstream request for `path` (`/v1/responses`, `/v1/chat/completions`); the client's
    /// headers pass but for its credentials, hop-by-hop headers and `accept-encoding`.
    pub fn request(
        &self,
        path: &str,
        client_headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", self.key.expose()))
            .map_err(|_| format!("credential of provider {} is not a valid header value", self.id))?;
        bearer.set_sensitive(true);
        let length = body.len();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.endpoint))
            .body(Full::new(body))
            .map_err(|e| format!("bad upstream URL for provider {}: {e}", self.id))?;
        let headers = req.headers_mut();
        // An allow-list: a tenant must not pick the provider account's organization or project
        // (`OpenAI-Organization`, `OpenAI-Project`: billing, limits, data settings) or pass
        // anything else the provider acts on.
        for (name, value) in forwarded_headers(client_headers).iter() {
            let n = name.as_str();
            if FORWARDED.contains(&n) || n.starts_with("x-codex-") {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(header::AUTHORIZATION, bearer);
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_key_replaces_the_virtual_key() {
        let api = OpenAiApi {
            id: "openai".into(),
            endpoint: "https://api.openai.com".into(),
            key: Secret::new("sk-upstream"),
        };
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer tg_virtual".parse().unwrap());
        h.insert("session_id", "s-1".parse().unwrap());
        h.insert("accept-encoding", "gzip".parse().unwrap());
        h.insert("openai-organization", "org-evil".parse().unwrap());
        h.insert("openai-project", "proj_evil".parse().unwrap());
        h.insert("x-codex-turn-metadata", "{}".parse().unwrap());
        let req = api
            .request("/v1/responses", &h, Bytes::from_static(b"{}"))
            .unwrap();
        assert_eq!(req.uri(), "https://api.openai.com/v1/responses");
        assert_eq!(req.headers()["authorization"], "Bearer sk-upstream");
        assert_eq!(req.headers().get_all("authorization").iter().count(), 1);
        assert!(req.headers()["authorization"].is_sensitive());
        assert_eq!(req.headers()["session_id"], "s-1");
        assert_eq!(req.headers()["x-codex-turn-metadata"], "{}");
        assert!(
            req.headers().get("openai-organization").is_none(),
            "a tenant picks no organization"
        );
        assert!(req.headers().get("openai-project").is_none());
        assert_eq!(req.headers()["accept-encoding"], "identity");
        assert_eq!(req.headers()["content-length"], "2");
    }
}
