//! The Anthropic Messages API as is: kind `anthropic` (the provider's own key in
//! `x-api-key`) and kind `tollgate` (another tollgate-proxy, the gateway: the client's virtual
//! key is forwarded, and the gateway authenticates it again). Requests and answers pass
//! unchanged apart from the credential.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request};
use http_body_util::Full;

use crate::secret::Secret;
use crate::upstream::forwarded_headers;

/// How calls to an Anthropic-format provider are authenticated.
#[derive(Debug)]
pub enum ProviderAuth {
    /// The provider's own key, read from the policy's credential source; the client's
    /// credential headers are replaced by it.
    Key(Secret),
    /// The credential could not be read: why (where from, never what). Calls fail as
    /// `provider unavailable`.
    Unreadable(String),
    /// No provider credential (kind `tollgate`): the client's own virtual key is forwarded
    /// for the gateway to authenticate again.
    ForwardClientKey,
}

/// An Anthropic-format provider: where it is and how it is authenticated.
#[derive(Debug)]
pub struct AnthropicApi {
    /// Provider id (for error messages).
    pub id: String,
    /// Base URL without a trailing slash.
    pub endpoint: String,
    /// Its credential.
    pub auth: ProviderAuth,
}

impl AnthropicApi {
    /// Builds the upstream request for `path_and_query` (e.g. `/v1/messages?beta=true`), with
    /// the credential `auth` calls for; the error says why not (never a secret).
    ///
    /// `client_key` is the virtual key the client authenticated with; a `tollgate` provider
    /// gets exactly that one (as a Bearer token), whatever other credential headers the client
    /// sent, so the gateway judges the key the sidecar judged.
    pub fn request(
        &self,
        method: Method,
        path_and_query: &str,
        client_headers: &HeaderMap,
        client_key: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let (name, mut value) = match &self.auth {
            ProviderAuth::Key(secret) => {
                let key = HeaderValue::from_str(secret.expose())
                    .map_err(|_| format!("credential of provider {} is not a valid header value", self.id))?;
                (HeaderName::from_static("x-api-key"), key)
            }
            ProviderAuth::ForwardClientKey => {
                let key =
                    client_key.ok_or_else(|| format!("no authenticated key to forward to {}", self.id))?;
                let bearer = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| "the virtual key is not a valid header value".to_owned())?;
                (header::AUTHORIZATION, bearer)
            }
            ProviderAuth::Unreadable(why) => return Err(why.clone()),
        };
        value.set_sensitive(true);
        let uri = format!("{}{}", self.endpoint, path_and_query);
        // A bodiless GET or DELETE (the MCP listen stream, session end) declares no length.
        let declare_length = !body.is_empty() || method == Method::POST;
        let length = body.len();
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .body(Full::new(body))
            .map_err(|e| format!("bad upstream URL for provider {}: {e}", self.id))?;
        let headers = req.headers_mut();
        *headers = forwarded_headers(client_headers);
        headers.insert(name, value);
        // Usage is read from the body: ask for it uncompressed (a compressed body would pass
        // through unmetered).
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        if declare_length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(auth: ProviderAuth) -> AnthropicApi {
        AnthropicApi {
            id: "p".into(),
            endpoint: "https://api.example.com".into(),
            auth,
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

    fn build(p: &AnthropicApi) -> Result<Request<Full<Bytes>>, String> {
        p.request(
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
        let p = provider(ProviderAuth::Key(Secret::new("sk-upstream")));
        let req = build(&p).unwrap();
        assert_forwarded_verbatim(&req);
        let out = req.headers();
        assert_eq!(out["x-api-key"], "sk-upstream");
        assert_eq!(out.get_all("x-api-key").iter().count(), 1);
        assert!(out.get("authorization").is_none());
    }

    #[test]
    fn a_tollgate_provider_gets_exactly_the_key_that_authenticated() {
        let p = provider(ProviderAuth::ForwardClientKey);
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
        let req = p
            .request(Method::GET, "/mcp", &mixed, Some("vk-mine"), Bytes::new())
            .unwrap();
        assert_eq!(req.uri(), "https://api.example.com/mcp");
        assert_eq!(req.headers()["authorization"], "Bearer vk-mine");
        assert_eq!(req.headers().get_all("authorization").iter().count(), 1);
        assert!(req.headers().get("x-api-key").is_none());
        assert!(
            req.headers().get("content-length").is_none(),
            "a bodiless GET declares no length"
        );
        // Nothing authenticated, nothing forwarded.
        assert!(
            p.request(Method::GET, "/mcp", &mixed, None, Bytes::new())
                .is_err()
        );
    }

    #[test]
    fn an_unreadable_credential_is_an_error_without_the_value() {
        let p = provider(ProviderAuth::Unreadable(
            "environment variable K is not set".into(),
        ));
        assert_eq!(build(&p).unwrap_err(), "environment variable K is not set");
    }
}
