//! Azure AI Foundry (Microsoft Foundry), Anthropic models.
//!
//! * URL: `{endpoint}/v1/messages` and `{endpoint}/v1/messages/count_tokens`, the endpoint
//!   being `https://{resource}.services.ai.azure.com/anthropic`.
//! * Body: the Anthropic Messages body, `model` set to the routed deployment name (in place,
//!   every other member keeps its bytes).
//! * Headers: as for Anthropic ([`forwarded_headers`]), plus the credential: `api-key: <key>`
//!   (the header Anthropic's Foundry SDK sets) for an API key, else `authorization: Bearer
//!   <Entra token>`.
//! * Entra tokens (client credentials grant, `scope=https://ai.azure.com/.default`) from
//!   `{authority}/{tenant}/oauth2/v2.0/token`, with a client secret or, for workload identity,
//!   the federated token file as `client_assertion` (re-read at every refresh: the kubelet
//!   rotates it). Cached in an [`oauth::TokenCache`], dropped when Foundry answers 401.
//! * Answers: passed through; errors mapped like Vertex AI's
//!   ([`crate::providers::vertex::errors`]): Anthropic errors unchanged, Azure errors to
//!   Anthropic errors, never a 401 to the client.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::body::BoxedBody;
use crate::providers::Operation;
use crate::providers::body_edit::{BodyEdit, edit};
use crate::providers::cloud_errors::{self as errors, Cloud};
use crate::providers::oauth::{self, IssuedToken, TokenCache};
use crate::providers::vertex::segment;
use crate::secret::CredentialReader;
use crate::secret::Secret;
use crate::upstream::{HttpClient, forwarded_headers};

/// The Entra scope for Foundry's data plane.
pub const FOUNDRY_SCOPE: &str = "https://ai.azure.com/.default";

/// Entra's public-cloud authority, when none is configured.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// The client assertion type of a federated token (RFC 7523).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A Foundry provider's configuration.
#[derive(Debug, Clone)]
pub struct FoundryConfig {
    /// `https://{resource}.services.ai.azure.com/anthropic`.
    pub endpoint: String,
    /// The gateway's credential.
    pub auth: AzureAuth,
}

/// Where the gateway's Azure credential comes from.
#[derive(Debug, Clone)]
pub enum AzureAuth {
    /// A Foundry resource key, sent as `api-key`.
    ApiKey(Secret),
    /// An Entra app registration's client secret.
    ClientSecret {
        /// The directory (tenant) id.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
        /// The authority, default `https://login.microsoftonline.com/`.
        authority_host: Option<String>,
    },
    /// AKS Workload Identity: a federated token file exchanged for an Entra token. Unset
    /// fields come from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and
    /// `AZURE_AUTHORITY_HOST` (what the workload identity webhook injects).
    WorkloadIdentity {
        /// The directory (tenant) id.
        tenant_id: Option<String>,
        /// The application (client) id.
        client_id: Option<String>,
        /// The federated token file.
        token_file: Option<String>,
        /// The authority.
        authority_host: Option<String>,
    },
}

/// The resolved credential.
enum Credential {
    ApiKey(Secret),
    Entra {
        token_url: String,
        client_id: String,
        grant: Grant,
    },
    Unusable(String),
}

enum Grant {
    Secret(Secret),
    FederatedTokenFile(String),
}

/// The Foundry provider: builds upstream requests and maps answers.
pub struct Foundry {
    endpoint: String,
    credential: Credential,
    cache: TokenCache,
    reader: Arc<dyn CredentialReader + Send + Sync>,
}

impl std::fmt::Debug for Foundry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Foundry")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn token_url(authority: Option<&str>, tenant: &str) -> Result<String, String> {
    let authority = authority
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_AUTHORITY_HOST);
    Ok(format!(
        "{}/{}/oauth2/v2.0/token",
        authority.trim_end_matches('/'),
        segment(tenant).map_err(|_| "the Azure tenant id is empty".to_owned())?
    ))
}

impl Foundry {
    /// A provider for `config`; `reader` reads the environment and the federated token file. A
    /// credential problem is not an error here: it is reported by every [`Foundry::request`].
    pub fn new(config: FoundryConfig, reader: Arc<dyn CredentialReader + Send + Sync>) -> Self {
        let credential = match config.auth {
            AzureAuth::ApiKey(key) => Credential::ApiKey(key),
            AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
                authority_host,
            } => match token_url(authority_host.as_deref(), &tenant_id) {
                Ok(token_url) => Credential::Entra {
                    token_url,
                    client_id,
                    grant: Grant::Secret(client_secret),
                },
                Err(why) => Credential::Unusable(why),
            },
            AzureAuth::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
                authority_host,
            } => {
                let or_env = |v: Option<String>, name: &str| {
                    v.or_else(|| reader.env(name))
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                };
                let tenant = or_env(tenant_id, "AZURE_TENANT_ID");
                let client = or_env(client_id, "AZURE_CLIENT_ID");
                let file = or_env(token_file, "AZURE_FEDERATED_TOKEN_FILE");
                let authority = or_env(authority_host, "AZURE_AUTHORITY_HOST");
                match (tenant, client, file) {
                    (Some(t), Some(c), Some(f)) => match token_url(authority.as_deref(), &t) {
                        Ok(token_url) => Credential::Entra {
                            token_url,
                            client_id: c,
                            grant: Grant::FederatedTokenFile(f),
                        },
                        Err(why) => Credential::Unusable(why),
                    },
                    (t, c, f) => {
                        let missing: Vec<&str> = [
                            (t.is_none(), "AZURE_TENANT_ID"),
                            (c.is_none(), "AZURE_CLIENT_ID"),
                            (f.is_none(), "AZURE_FEDERATED_TOKEN_FILE"),
                        ]
                        .into_iter()
                        .filter_map(|(m, n)| m.then_some(n))
                        .collect();
                        Credential::Unusable(format!(
                            "Azure workload identity is not configured: {} not set",
                            missing.join(", ")
                        ))
                    }
                }
            }
        };
        let source = match &credential {
            Credential::Entra { client_id, .. } => format!("Entra ID (client {client_id})"),
            _ => "Azure credentials".to_owned(),
        };
        Self {
            endpoint: config.endpoint.trim_end_matches('/').to_owned(),
            credential,
            cache: TokenCache::new(source),
            reader,
        }
    }

    /// The URL for `op`.
    pub fn url(&self, op: Operation) -> String {
        match op {
            Operation::Messages { .. } => format!("{}/v1/messages", self.endpoint),
            Operation::CountTokens => format!("{}/v1/messages/count_tokens", self.endpoint),
        }
    }

    async fn entra_token(
        &self,
        client: &HttpClient,
        token_url: &str,
        client_id: &str,
        grant: &Grant,
    ) -> Result<IssuedToken, String> {
        let source = format!("Entra ID (client {client_id})");
        match grant {
            Grant::Secret(secret) => {
                oauth::exchange(
                    client,
                    &source,
                    token_url,
                    Some(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("scope", FOUNDRY_SCOPE),
                        ("client_secret", secret.expose()),
                    ]),
                    &[],
                )
                .await
            }
            Grant::FederatedTokenFile(path) => {
                let assertion = self
                    .reader
                    .file(path)
                    .map_err(|e| format!("cannot read the federated token file {path}: {}", e.kind()))?;
                let assertion = assertion.trim();
                if assertion.is_empty() {
                    return Err(format!("the federated token file {path} is empty"));
                }
                oauth::exchange(
                    client,
                    &source,
                    token_url,
                    Some(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("scope", FOUNDRY_SCOPE),
                        ("client_assertion_type", JWT_BEARER_ASSERTION),
                        ("client_assertion", assertion),
                    ]),
                    &[],
                )
                .await
            }
        }
    }

    /// The upstream request for the client's `op` on `model` (the deployment name); the error
    /// is for the client (never a credential).
    pub async fn request(
        &self,
        client: &HttpClient,
        op: Operation,
        model: &str,
        client_headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let (name, mut value) = match &self.credential {
            Credential::ApiKey(key) => (
                HeaderName::from_static("api-key"),
                HeaderValue::from_str(key.expose())
                    .map_err(|_| "the Foundry API key is not a valid header value".to_owned())?,
            ),
            Credential::Entra {
                token_url,
                client_id,
                grant,
            } => {
                let token = self
                    .cache
                    .get(|| self.entra_token(client, token_url, client_id, grant))
                    .await?;
                (header::AUTHORIZATION, oauth::bearer("Entra ID", &token)?)
            }
            Credential::Unusable(why) => return Err(why.clone()),
        };
        value.set_sensitive(true);
        let body = edit(
            body,
            &BodyEdit {
                set: vec![("model", json!(model))],
                ..BodyEdit::default()
            },
        )?;
        let url = self.url(op);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .body(Full::new(body.clone()))
            .map_err(|e| format!("bad Foundry URL {url}: {e}"))?;
        let headers = req.headers_mut();
        *headers = forwarded_headers(client_headers);
        headers.insert(name, value);
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Ok(req)
    }

    /// The client's response for Foundry's answer; a 401 also drops the cached token.
    pub fn response<B>(&self, _op: Operation, resp: Response<B>) -> Response<BoxedBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.cache.invalidate();
        }
        errors::map_response(Cloud::Foundry, resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::oauth::tests::{Recorded, TestServer};
    use std::collections::HashMap;

    struct Creds(HashMap<String, String>);
    impl CredentialReader for Creds {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn foundry(auth: AzureAuth, creds: &[(&str, &str)]) -> Foundry {
        Foundry::new(
            FoundryConfig {
                endpoint: "https://res.services.ai.azure.com/anthropic/".into(),
                auth,
            },
            Arc::new(Creds(
                creds
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )),
        )
    }

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "vk-client".parse().unwrap());
        h.insert("api-key", "vk-stray".parse().unwrap());
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());
        h.insert("anthropic-beta", "b1".parse().unwrap());
        h.insert("x-claude-code-session-id", "s1".parse().unwrap());
        h
    }

    #[tokio::test]
    async fn api_key_requests_forward_anthropic_headers_and_set_api_key() {
        let client = crate::upstream::build_client().unwrap();
        let f = foundry(AzureAuth::ApiKey(Secret::new("az-key")), &[]);
        assert_eq!(
            f.url(Operation::CountTokens),
            "https://res.services.ai.azure.com/anthropic/v1/messages/count_tokens"
        );
        let body = Bytes::from_static(br#"{"model":"sonnet","max_tokens":1,"messages":[]}"#);
        let req = f
            .request(
                &client,
                Operation::Messages { stream: true },
                "claude-sonnet-4-5",
                &client_headers(),
                &body,
            )
            .await
            .unwrap();
        assert_eq!(
            req.uri(),
            "https://res.services.ai.azure.com/anthropic/v1/messages"
        );
        let h = req.headers();
        assert_eq!(h["api-key"], "az-key");
        assert!(h["api-key"].is_sensitive());
        assert_eq!(
            h.get_all("api-key").iter().count(),
            1,
            "the client's api-key is dropped"
        );
        assert!(h.get("x-api-key").is_none() && h.get("authorization").is_none());
        assert_eq!(h["anthropic-version"], "2023-06-01");
        assert_eq!(h["anthropic-beta"], "b1");
        assert_eq!(h["x-claude-code-session-id"], "s1");
        let expected = br#"{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}"#;
        assert_eq!(h["content-length"], expected.len().to_string().as_str());
    }

    #[tokio::test]
    async fn client_secret_tokens_are_fetched_once_and_sent_as_bearer() {
        let server = TestServer::start(|_: &Recorded| {
            (200, r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"entra-token-1"}"#.into())
        })
        .await;
        let client = crate::upstream::build_client().unwrap();
        let f = foundry(
            AzureAuth::ClientSecret {
                tenant_id: "tenant-1".into(),
                client_id: "app-1".into(),
                client_secret: Secret::new("s3cr3t"),
                authority_host: Some(server.url.clone()),
            },
            &[],
        );
        for _ in 0..3 {
            let req = f
                .request(
                    &client,
                    Operation::CountTokens,
                    "m",
                    &client_headers(),
                    &Bytes::from_static(b"{}"),
                )
                .await
                .unwrap();
            assert_eq!(req.headers()["authorization"], "Bearer entra-token-1");
            assert!(req.headers().get("api-key").is_none());
        }
        let seen = server.requests();
        assert_eq!(seen.len(), 1, "cached");
        assert_eq!(seen[0].path, "/tenant-1/oauth2/v2.0/token");
        let form: HashMap<String, String> = url::form_urlencoded::parse(&seen[0].body).into_owned().collect();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], "app-1");
        assert_eq!(form["scope"], "https://ai.azure.com/.default");
        assert_eq!(form["client_secret"], "s3cr3t");
    }

    #[tokio::test]
    async fn workload_identity_reads_env_and_the_token_file_and_errors_hide_secrets() {
        let server = TestServer::start(|r: &Recorded| {
            let form: HashMap<String, String> = url::form_urlencoded::parse(&r.body).into_owned().collect();
            if form.get("client_assertion").map(String::as_str) == Some("federated-jwt") {
                (200, r#"{"expires_in":"3600","access_token":"entra-wi"}"#.into())
            } else {
                (
                    401,
                    r#"{"error":"invalid_client","error_description":"AADSTS700027: bad assertion"}"#.into(),
                )
            }
        })
        .await;
        let client = crate::upstream::build_client().unwrap();
        let env = [
            ("AZURE_TENANT_ID", "t-env"),
            ("AZURE_CLIENT_ID", "c-env"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("AZURE_AUTHORITY_HOST", server.url.as_str()),
            (
                "/var/run/secrets/azure/tokens/azure-identity-token",
                "federated-jwt\n",
            ),
        ];
        let wi = || AzureAuth::WorkloadIdentity {
            tenant_id: None,
            client_id: None,
            token_file: None,
            authority_host: None,
        };
        let f = foundry(wi(), &env);
        let req = f
            .request(
                &client,
                Operation::Messages { stream: false },
                "m",
                &HeaderMap::new(),
                &Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        assert_eq!(req.headers()["authorization"], "Bearer entra-wi");
        let seen = server.requests();
        assert_eq!(seen[0].path, "/t-env/oauth2/v2.0/token");
        let form: HashMap<String, String> = url::form_urlencoded::parse(&seen[0].body).into_owned().collect();
        assert_eq!(form["client_assertion_type"], JWT_BEARER_ASSERTION);
        assert_eq!(form["client_id"], "c-env");

        // A refused assertion: the endpoint's reason, not the assertion.
        let mut bad = env;
        bad[4].1 = "wrong-jwt";
        let err = foundry(wi(), &bad)
            .request(
                &client,
                Operation::Messages { stream: false },
                "m",
                &HeaderMap::new(),
                &Bytes::from_static(b"{}"),
            )
            .await
            .unwrap_err();
        assert!(
            err.contains("AADSTS700027") && !err.contains("wrong-jwt"),
            "{err}"
        );

        let err = foundry(wi(), &[])
            .request(
                &client,
                Operation::CountTokens,
                "m",
                &HeaderMap::new(),
                &Bytes::from_static(b"{}"),
            )
            .await
            .unwrap_err();
        assert!(
            err.contains("AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE"),
            "{err}"
        );

        let secret = foundry(
            AzureAuth::ClientSecret {
                tenant_id: "t".into(),
                client_id: "c".into(),
                client_secret: Secret::new("very-secret-value"),
                authority_host: Some(server.url.clone()),
            },
            &[],
        );
        let err = secret
            .request(
                &client,
                Operation::CountTokens,
                "m",
                &HeaderMap::new(),
                &Bytes::from_static(b"{}"),
            )
            .await
            .unwrap_err();
        assert!(!err.contains("very-secret-value"), "{err}");
    }

    #[tokio::test]
    async fn a_401_drops_the_cached_token() {
        let server =
            TestServer::start(|_: &Recorded| (200, r#"{"expires_in":3600,"access_token":"tok"}"#.into()))
                .await;
        let client = crate::upstream::build_client().unwrap();
        let f = foundry(
            AzureAuth::ClientSecret {
                tenant_id: "t".into(),
                client_id: "c".into(),
                client_secret: Secret::new("s"),
                authority_host: Some(server.url.clone()),
            },
            &[],
        );
        let (none, body) = (HeaderMap::new(), Bytes::from_static(b"{}"));
        let go = || f.request(&client, Operation::CountTokens, "m", &none, &body);
        go().await.unwrap();
        let resp = Response::builder()
            .status(401)
            .body(Full::new(Bytes::from_static(
                br#"{"error":{"code":"401","message":"Access denied due to invalid subscription key"}}"#,
            )))
            .unwrap();
        assert_eq!(f.response(Operation::CountTokens, resp).status(), 502);
        go().await.unwrap();
        assert_eq!(server.requests().len(), 2);
    }
}
