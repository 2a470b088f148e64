//! Google access tokens for Vertex AI.
//!
//! * Service account key (a JSON key file): a JWT signed RS256 with the key (`kid` = the key's
//!   `private_key_id`; `iss` = `client_email`, `scope` = cloud-platform, `aud` = `token_uri`,
//!   `exp` = `iat` + 1 h) exchanged at `token_uri` for an access token
//!   (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, RFC 7523).
//! * Metadata server (GKE Workload Identity, GCE): `GET
//!   http://{host}/computeMetadata/v1/instance/service-accounts/default/token` with
//!   `Metadata-Flavor: Google`.
//! * A static access token.
//!
//! Errors name the source (a file path, a host), never key material or tokens.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use serde_json::json;

use crate::providers::oauth::{self, IssuedToken};
use crate::secret::Secret;
use crate::upstream::HttpClient;

/// The OAuth scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The JWT bearer grant (RFC 7523).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google's token endpoint, when a key file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The metadata server host, when `GCE_METADATA_HOST` is not set.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// Lifetime asked for in the JWT assertion (Google's maximum).
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// A parsed service account key: who it is and the RSA key that signs for it.
pub struct ServiceAccount {
    /// `client_email`.
    pub client_email: String,
    /// `private_key_id` (the JWT `kid`).
    pub private_key_id: String,
    /// `token_uri`.
    pub token_uri: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses a service account JSON key; `origin` (e.g. a file path) is named in errors, which
    /// never quote the key.
    pub fn parse(json: &str, origin: &str) -> Result<Self, String> {
        let f: KeyFile = serde_json::from_str(json).map_err(|e| {
            format!(
                "{origin} is not a service account JSON key (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        match f.kind.as_deref() {
            Some("service_account") | None => {}
            Some(other) => {
                return Err(format!(
                    "{origin} holds credentials of type {other:?}; only \"service_account\" keys are supported \
                     (use the metadata server for workload identity)"
                ));
            }
        }
        let field = |v: Option<String>, name: &str| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| format!("{origin} has no {name}"))
        };
        let client_email = field(f.client_email, "client_email")?;
        let private_key_id = field(f.private_key_id, "private_key_id")?;
        let pem = field(f.private_key, "private_key")?;
        let token_uri = f
            .token_uri
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        let der =
            pem_to_der(&pem).ok_or_else(|| format!("{origin}: private_key is not a PEM \"PRIVATE KEY\""))?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("{origin}: private_key is not a usable PKCS#8 RSA key ({e})"))?;
        Ok(Self {
            client_email,
            private_key_id,
            token_uri,
            key,
        })
    }

    /// The signed JWT assertion for `iat` (seconds since the epoch).
    pub fn assertion(&self, iat: u64) -> Result<String, String> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = json!({
            "iss": self.client_email,
            "scope": CLOUD_PLATFORM_SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| format!("signing the JWT assertion for {} failed", self.client_email))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// Exchanges a fresh assertion at `token_uri`.
    pub async fn fetch(&self, client: &HttpClient) -> Result<IssuedToken, String> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let assertion = self.assertion(iat)?;
        let source = format!("service account {}", self.client_email);
        oauth::exchange(
            client,
            &source,
            &self.token_uri,
            Some(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)]),
            &[],
        )
        .await
    }

    /// The RSA public key (PKCS#1 `RSAPublicKey` DER), for verifying assertions in tests.
    pub fn public_key_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref().to_vec()
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = pem.find(begin)? + begin.len();
    let stop = start + pem[start..].find(end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

/// Where Vertex AI access tokens come from, resolved from the configuration.
pub enum TokenSource {
    /// A key given in the configuration, parsed once.
    ServiceAccount(Arc<ServiceAccount>),
    /// A key file (`GOOGLE_APPLICATION_CREDENTIALS`), re-read at every refresh (rotation).
    KeyFile(String),
    /// The metadata server at this host (`host[:port]`).
    Metadata(String),
    /// A static access token.
    Static(Secret),
    /// No usable source: the reason (no secret in it).
    Unusable(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::ServiceAccount(sa) => write!(f, "ServiceAccount({})", sa.client_email),
            TokenSource::KeyFile(p) => write!(f, "KeyFile({p})"),
            TokenSource::Metadata(h) => write!(f, "Metadata({h})"),
            TokenSource::Static(_) => f.write_str("Static(<redacted>)"),
            TokenSource::Unusable(why) => write!(f, "Unusable({why})"),
        }
    }
}

impl TokenSource {
    /// What the source is, for errors and logs.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::ServiceAccount(sa) => format!("service account {}", sa.client_email),
            TokenSource::KeyFile(p) => format!("service account key file {p}"),
            TokenSource::Metadata(h) => format!("metadata server {h}"),
            TokenSource::Static(_) => "static access token".to_owned(),
            TokenSource::Unusable(_) => "no Google credentials".to_owned(),
        }
    }

    /// A fresh token from the source (callers cache it).
    pub async fn fetch(
        &self,
        client: &HttpClient,
        reader: &dyn crate::policy::CredentialReader,
    ) -> Result<IssuedToken, String> {
        match self {
            TokenSource::ServiceAccount(sa) => sa.fetch(client).await,
            TokenSource::KeyFile(path) => {
                let json = reader
                    .file(path)
                    .map_err(|e| format!("cannot read the service account key file {path}: {}", e.kind()))?;
                ServiceAccount::parse(&json, path)?.fetch(client).await
            }
            TokenSource::Metadata(host) => {
                let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
                oauth::exchange(
                    client,
                    &format!("metadata server {host}"),
                    &url,
                    None,
                    &[("metadata-flavor", "Google")],
                )
                .await
            }
            TokenSource::Static(t) => Ok(IssuedToken {
                token: t.clone(),
                expires_in: std::time::Duration::from_secs(u64::from(u32::MAX)),
            }),
            TokenSource::Unusable(why) => Err(why.clone()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    /// A 2048-bit RSA key generated once with `openssl genpkey -algorithm RSA` for tests only.
    pub(crate) const TEST_KEY_PEM: &str = include_str!("testdata/test-sa-key.pem");

    pub(crate) fn key_json(token_uri: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-123",
            "private_key": TEST_KEY_PEM,
            "client_email": "gateway@p.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[test]
    fn the_assertion_is_an_rs256_jwt_with_the_documented_claims() {
        let sa = ServiceAccount::parse(&key_json("https://oauth2.googleapis.com/token"), "key.json").unwrap();
        let jwt = sa.assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "kid-123"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({
                "iss": "gateway@p.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/cloud-platform",
                "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public = sa.public_key_der();
        let verifier = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public);
        verifier
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signature verifies with the key's public half");
        assert!(verifier.verify(b"tampered.payload", &sig).is_err());
    }

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        let no_email = key_json("u").replace("client_email", "x_email");
        assert!(
            ServiceAccount::parse(&no_email, "k.json")
                .unwrap_err()
                .contains("client_email")
        );
        let user = json!({"type": "authorized_user", "refresh_token": "rt-secret"}).to_string();
        let err = ServiceAccount::parse(&user, "adc.json").unwrap_err();
        assert!(
            err.contains("authorized_user") && !err.contains("rt-secret"),
            "{err}"
        );
        let garbled = key_json("u").replace("MII", "!!!");
        let err = ServiceAccount::parse(&garbled, "k.json").unwrap_err();
        assert!(!err.contains("BEGIN") && !err.contains("!!!"), "{err}");
        let err = ServiceAccount::parse("{\"private_key\": \"secret-bits", "k.json").unwrap_err();
        assert!(!err.contains("secret-bits"), "{err}");
        let sa = ServiceAccount::parse(&key_json("u"), "k.json").unwrap();
        assert!(!format!("{sa:?}").contains("PRIVATE"));
    }
}
