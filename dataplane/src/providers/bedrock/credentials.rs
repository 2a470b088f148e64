//! AWS credentials for Bedrock: static keys, a Bedrock API key, and temporary credentials from
//! STS `AssumeRoleWithWebIdentity` (EKS IRSA) or a container-credentials endpoint (EKS Pod
//! Identity, ECS), resolved as the AWS SDKs do.
//!
//! **Guarantees.** Temporary credentials are cached and refreshed 5 minutes before they expire,
//! by one request at a time (concurrent requests wait for that refresh and share its result).
//! When a refresh fails while the cached credentials are still valid, they keep being used
//! (a warning is logged once per failing period, and refreshes are retried at most every
//! [`RETRY_AFTER_FAILURE`]). Token files are re-read on every refresh (Kubernetes rotates
//! them). Credentials live only as [`Secret`]; errors say where a credential came from, never
//! what it is.
//!
//! **The `Environment` chain**, read at every request: `AWS_BEARER_TOKEN_BEDROCK` (a Bedrock
//! API key: the AWS SDKs use it in preference to SigV4 credentials when it is set), then
//! `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), then
//! `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`,
//! `AWS_ENDPOINT_URL_STS`), then `AWS_CONTAINER_CREDENTIALS_FULL_URI` (or `..._RELATIVE_URI`
//! on the ECS link-local host) with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;

use super::AwsAuth;
use crate::secret::CredentialReader;
use crate::secret::Secret;
use crate::upstream::{HttpClient, error_chain};

/// Temporary credentials are refreshed this long before they expire.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// After a failed refresh, still-valid credentials are used this long before trying again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// How long a credentials endpoint may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest credentials answer read.
const MAX_ANSWER: usize = 64 << 10;
/// Lifetime assumed for container credentials that state no expiry.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// SigV4 credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// When temporary credentials expire.
    pub expires: Option<Timestamp>,
}

/// How to authenticate one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// `Authorization: Bearer <key>`.
    ApiKey(Secret),
    /// A SigV4 signature.
    SigV4(AwsCredentials),
}

/// Where temporary credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    WebIdentity {
        role_arn: String,
        token_file: String,
        session_name: String,
        sts_endpoint: String,
    },
    Container {
        uri: String,
        token: ContainerToken,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ContainerToken {
    None,
    File(String),
    Value(Secret),
}

impl Source {
    /// Identifies the source in the cache and in messages (never a secret).
    fn describe(&self) -> String {
        match self {
            Source::WebIdentity {
                role_arn, token_file, ..
            } => format!("web identity (role {role_arn}, token file {token_file})"),
            Source::Container { uri, .. } => format!("container credentials endpoint {uri}"),
        }
    }
}

struct Cached {
    source: String,
    creds: AwsCredentials,
    /// No refresh is tried before this (after a failure).
    quiet_until: Option<Instant>,
}

/// Resolves and caches credentials; see the module docs.
pub struct CredentialProvider {
    auth: AwsAuth,
    region: String,
    reader: Arc<dyn CredentialReader + Send + Sync>,
    cache: std::sync::Mutex<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
    warned: AtomicBool,
}

impl CredentialProvider {
    /// A provider for `auth`; `region` picks the default STS endpoint.
    pub fn new(auth: AwsAuth, region: &str, reader: Arc<dyn CredentialReader + Send + Sync>) -> Self {
        Self {
            auth,
            region: region.to_owned(),
            reader,
            cache: std::sync::Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            warned: AtomicBool::new(false),
        }
    }

    /// The credentials for the next request.
    pub async fn resolve(&self, client: &HttpClient) -> Result<Resolved, String> {
        let source = match &self.auth {
            AwsAuth::ApiKey(key) => return Ok(Resolved::ApiKey(key.clone())),
            AwsAuth::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                return Ok(Resolved::SigV4(AwsCredentials {
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    session_token: session_token.clone(),
                    expires: None,
                }));
            }
            AwsAuth::WebIdentity {
                role_arn,
                token_file,
                session_name,
                sts_endpoint,
            } => Source::WebIdentity {
                role_arn: role_arn.clone(),
                token_file: token_file.clone(),
                session_name: session_name.clone().unwrap_or_else(default_session_name),
                sts_endpoint: sts_endpoint.clone().unwrap_or_else(|| self.default_sts()),
            },
            AwsAuth::Container { full_uri, token_file } => Source::Container {
                uri: full_uri.clone(),
                token: token_file
                    .clone()
                    .map_or(ContainerToken::None, ContainerToken::File),
            },
            AwsAuth::Environment => match self.env_chain()? {
                EnvChoice::Done(r) => return Ok(r),
                EnvChoice::Temporary(s) => s,
            },
        };
        self.temporary(client, &source).await.map(Resolved::SigV4)
    }

    fn default_sts(&self) -> String {
        self.env("AWS_ENDPOINT_URL_STS")
            .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", self.region))
    }

    fn env(&self, name: &str) -> Option<String> {
        self.reader.env(name).filter(|v| !v.trim().is_empty())
    }

    fn env_chain(&self) -> Result<EnvChoice, String> {
        if let Some(key) = self.env("AWS_BEARER_TOKEN_BEDROCK") {
            return Ok(EnvChoice::Done(Resolved::ApiKey(Secret::new(&key))));
        }
        match (self.env("AWS_ACCESS_KEY_ID"), self.env("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                return Ok(EnvChoice::Done(Resolved::SigV4(AwsCredentials {
                    access_key_id: Secret::new(&id),
                    secret_access_key: Secret::new(&secret),
                    session_token: self.env("AWS_SESSION_TOKEN").map(|t| Secret::new(&t)),
                    expires: None,
                })));
            }
            (Some(_), None) => return Err("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY".into()),
            (None, Some(_)) => return Err("AWS_SECRET_ACCESS_KEY is set without AWS_ACCESS_KEY_ID".into()),
            (None, None) => {}
        }
        if let (Some(token_file), Some(role_arn)) =
            (self.env("AWS_WEB_IDENTITY_TOKEN_FILE"), self.env("AWS_ROLE_ARN"))
        {
            return Ok(EnvChoice::Temporary(Source::WebIdentity {
                role_arn,
                token_file,
                session_name: self
                    .env("AWS_ROLE_SESSION_NAME")
                    .unwrap_or_else(default_session_name),
                sts_endpoint: self.default_sts(),
            }));
        }
        let uri = self.env("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
            self.env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                .map(|rel| format!("http://169.254.170.2{rel}"))
        });
        if let Some(uri) = uri {
            let token = match (
                self.env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
                self.env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            ) {
                (Some(file), _) => ContainerToken::File(file),
                (None, Some(value)) => ContainerToken::Value(Secret::new(&value)),
                (None, None) => ContainerToken::None,
            };
            return Ok(EnvChoice::Temporary(Source::Container { uri, token }));
        }
        Err(
            "no AWS credentials in the environment (AWS_BEARER_TOKEN_BEDROCK, AWS_ACCESS_KEY_ID, \
             AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN or AWS_CONTAINER_CREDENTIALS_FULL_URI)"
                .into(),
        )
    }

    /// Cached credentials of `source` that are fresh (or, with `valid_only`, merely unexpired).
    fn cached(&self, source: &str, now: Timestamp, valid_only: bool) -> Option<(AwsCredentials, bool)> {
        let cache = self.cache.lock().ok()?;
        let c = cache.as_ref().filter(|c| c.source == source)?;
        let expires = c.creds.expires?;
        let left = expires.duration_since(now);
        let fresh = left > jiff::SignedDuration::try_from(REFRESH_BEFORE_EXPIRY).unwrap_or_default();
        let quiet = c.quiet_until.is_some_and(|q| Instant::now() < q);
        let valid = left > jiff::SignedDuration::ZERO;
        if fresh || (valid && (valid_only || quiet)) {
            Some((c.creds.clone(), fresh))
        } else {
            None
        }
    }

    async fn temporary(&self, client: &HttpClient, source: &Source) -> Result<AwsCredentials, String> {
        let key = source.describe();
        if let Some((c, _)) = self.cached(&key, Timestamp::now(), false) {
            return Ok(c);
        }
        // Single flight: whoever holds the lock refreshes; the others then find it fresh.
        let _flight = self.refresh.lock().await;
        if let Some((c, _)) = self.cached(&key, Timestamp::now(), false) {
            return Ok(c);
        }
        match self.fetch(client, source).await {
            Ok(creds) => {
                if let Ok(mut cache) = self.cache.lock() {
                    *cache = Some(Cached {
                        source: key,
                        creds: creds.clone(),
                        quiet_until: None,
                    });
                }
                self.warned.store(false, Ordering::Relaxed);
                Ok(creds)
            }
            Err(why) => {
                let Some((old, _)) = self.cached(&key, Timestamp::now(), true) else {
                    return Err(why);
                };
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        source = %key,
                        error = %why,
                        "refreshing AWS credentials failed; using the cached ones until they expire"
                    );
                }
                if let Some(c) = self.cache.lock().ok().as_deref_mut().and_then(Option::as_mut) {
                    c.quiet_until = Some(Instant::now() + RETRY_AFTER_FAILURE);
                }
                Ok(old)
            }
        }
    }

    async fn fetch(&self, client: &HttpClient, source: &Source) -> Result<AwsCredentials, String> {
        match source {
            Source::WebIdentity {
                role_arn,
                token_file,
                session_name,
                sts_endpoint,
            } => {
                let token = self
                    .reader
                    .file(token_file)
                    .map_err(|e| format!("reading the web identity token file {token_file}: {e}"))?;
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("Action", "AssumeRoleWithWebIdentity")
                    .append_pair("Version", "2011-06-15")
                    .append_pair("RoleArn", role_arn)
                    .append_pair("RoleSessionName", session_name)
                    .append_pair("WebIdentityToken", token.trim())
                    .finish();
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(sts_endpoint)
                    .header(
                        header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded; charset=utf-8",
                    )
                    .header(header::CONTENT_LENGTH, form.len())
                    .body(Full::new(Bytes::from(form)))
                    .map_err(|e| format!("bad STS endpoint {sts_endpoint}: {e}"))?;
                let (status, body) = send(client, req, "STS").await?;
                let text = String::from_utf8_lossy(&body);
                if !status.is_success() {
                    let code = xml_text(&text, "Code").unwrap_or_default();
                    let message = xml_text(&text, "Message").unwrap_or_default();
                    return Err(format!(
                        "STS AssumeRoleWithWebIdentity for {role_arn} answered {status}: {code} {message}"
                    ));
                }
                parse_sts(&text).map_err(|e| format!("STS AssumeRoleWithWebIdentity for {role_arn}: {e}"))
            }
            Source::Container { uri, token } => {
                let token =
                    match token {
                        ContainerToken::None => None,
                        ContainerToken::Value(v) => Some(v.clone()),
                        ContainerToken::File(f) => Some(Secret::new(&self.reader.file(f).map_err(|e| {
                            format!("reading the container authorization token file {f}: {e}")
                        })?)),
                    };
                let mut req = Request::builder()
                    .method(Method::GET)
                    .uri(uri)
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| format!("bad container credentials URI {uri}: {e}"))?;
                if let Some(token) = token {
                    let mut v = http::HeaderValue::from_str(token.expose()).map_err(|_| {
                        "the container authorization token is not a valid header value".to_owned()
                    })?;
                    v.set_sensitive(true);
                    req.headers_mut().insert(header::AUTHORIZATION, v);
                }
                let (status, body) = send(client, req, "the container credentials endpoint").await?;
                if !status.is_success() {
                    return Err(format!("container credentials endpoint {uri} answered {status}"));
                }
                parse_container(&body).map_err(|e| format!("container credentials endpoint {uri}: {e}"))
            }
        }
    }
}

enum EnvChoice {
    Done(Resolved),
    Temporary(Source),
}

fn default_session_name() -> String {
    format!("tollgate-{}", Timestamp::now().as_second())
}

async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    what: &str,
) -> Result<(StatusCode, Bytes), String> {
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("calling {what}: {}", error_chain(&e)))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {what}: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(FETCH_TIMEOUT, call)
        .await
        .map_err(|_| format!("{what} did not answer within {FETCH_TIMEOUT:?}"))?
}

/// The text of the first `<tag>` element, XML entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(xml_unescape(xml[start..start + len].trim()))
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn parse_expiry(raw: Option<&str>) -> Result<Timestamp, String> {
    match raw {
        Some(s) => s
            .trim()
            .parse::<Timestamp>()
            .map_err(|e| format!("unreadable Expiration {s:?}: {e}")),
        None => Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(DEFAULT_LIFETIME).unwrap_or_default())
            .map_err(|e| e.to_string()),
    }
}

/// Reads an `AssumeRoleWithWebIdentityResponse`.
fn parse_sts(xml: &str) -> Result<AwsCredentials, String> {
    let field = |tag: &str| xml_text(xml, tag).ok_or_else(|| format!("the answer has no {tag}"));
    let expiration = field("Expiration")?;
    Ok(AwsCredentials {
        access_key_id: Secret::new(&field("AccessKeyId")?),
        secret_access_key: Secret::new(&field("SecretAccessKey")?),
        session_token: Some(Secret::new(&field("SessionToken")?)),
        expires: Some(parse_expiry(Some(&expiration))?),
    })
}

/// Reads the ECS / EKS Pod Identity JSON answer.
fn parse_container(body: &[u8]) -> Result<AwsCredentials, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
        expiration: Option<String>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not credentials JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    Ok(AwsCredentials {
        access_key_id: Secret::new(&a.access_key_id),
        secret_access_key: Secret::new(&a.secret_access_key),
        session_token: a.token.as_deref().map(Secret::new),
        expires: Some(parse_expiry(a.expiration.as_deref())?),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// A [`CredentialReader`] over maps.
    #[derive(Default)]
    pub(crate) struct FakeReader {
        pub env: Mutex<HashMap<String, String>>,
        pub files: Mutex<HashMap<String, String>>,
    }

    impl FakeReader {
        pub fn with_env(pairs: &[(&str, &str)]) -> Arc<Self> {
            let r = Self::default();
            if let Ok(mut env) = r.env.lock() {
                env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            }
            Arc::new(r)
        }
        pub fn set_file(&self, path: &str, content: &str) {
            self.files.lock().unwrap().insert(path.into(), content.into());
        }
    }

    impl CredentialReader for FakeReader {
        fn env(&self, name: &str) -> Option<String> {
            self.env.lock().ok()?.get(name).cloned()
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            self.files
                .lock()
                .ok()
                .and_then(|f| f.get(path).cloned())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        }
    }

    /// What the credentials server saw and how it answers.
    #[derive(Default)]
    struct Server {
        hits: AtomicUsize,
        seen: Mutex<Vec<(String, String, String)>>,
        /// Seconds until the issued credentials expire.
        lifetime: Mutex<i64>,
        failing: AtomicBool,
        delay_ms: AtomicUsize,
    }

    async fn serve(state: Arc<Server>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            let n = state.hits.fetch_add(1, Ordering::SeqCst);
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap_or("").to_owned())
                                .unwrap_or_default();
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            state.seen.lock().unwrap().push((
                                path.clone(),
                                auth,
                                String::from_utf8_lossy(&body).into(),
                            ));
                            let delay = state.delay_ms.load(Ordering::SeqCst) as u64;
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            if state.failing.load(Ordering::SeqCst) {
                                return Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(500)
                                        .body(Full::new(Bytes::from_static(b"down")))
                                        .unwrap(),
                                );
                            }
                            let lifetime = *state.lifetime.lock().unwrap();
                            let exp = Timestamp::now()
                                .checked_add(jiff::SignedDuration::from_secs(lifetime))
                                .unwrap();
                            let exp = exp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                            let body = if path == "/sts/" {
                                format!(
                                    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                                     <AssumeRoleWithWebIdentityResult><Credentials>\
                                     <AccessKeyId>ASIA{n}</AccessKeyId><SecretAccessKey>sec&amp;{n}</SecretAccessKey>\
                                     <SessionToken>tok{n}</SessionToken><Expiration>{exp}</Expiration>\
                                     </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
                                )
                            } else {
                                format!(
                                    r#"{{"AccessKeyId":"ASIA{n}","SecretAccessKey":"sec{n}","Token":"tok{n}","Expiration":"{exp}"}}"#
                                )
                            };
                            Ok(http::Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn client() -> HttpClient {
        crate::upstream::build_client().unwrap()
    }

    fn creds_of(r: Resolved) -> AwsCredentials {
        match r {
            Resolved::SigV4(c) => c,
            Resolved::ApiKey(_) => panic!("expected SigV4 credentials"),
        }
    }

    async fn started(lifetime: i64) -> (Arc<Server>, String) {
        let state = Arc::new(Server::default());
        *state.lifetime.lock().unwrap() = lifetime;
        let base = serve(state.clone()).await;
        (state, base)
    }

    #[tokio::test]
    async fn container_credentials_are_cached_until_five_minutes_before_expiry() {
        let (state, base) = started(3600).await;
        let reader = FakeReader::with_env(&[]);
        reader.set_file("/tok", "pod-token-1\n");
        let p = CredentialProvider::new(
            AwsAuth::Container {
                full_uri: format!("{base}/container-credentials"),
                token_file: Some("/tok".into()),
            },
            "us-east-1",
            reader.clone(),
        );
        let c = client();
        let first = creds_of(p.resolve(&c).await.unwrap());
        assert_eq!(first.access_key_id.expose(), "ASIA0");
        assert_eq!(first.session_token.as_ref().unwrap().expose(), "tok0");
        assert_eq!(creds_of(p.resolve(&c).await.unwrap()), first);
        assert_eq!(state.hits.load(Ordering::SeqCst), 1, "cached");
        assert_eq!(state.seen.lock().unwrap()[0].1, "pod-token-1");

        // Credentials within 5 minutes of expiry are refreshed, with the token file re-read.
        *state.lifetime.lock().unwrap() = 200;
        if let Ok(mut cache) = p.cache.lock() {
            cache.as_mut().unwrap().creds.expires = Some(
                Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(240))
                    .unwrap(),
            );
        }
        reader.set_file("/tok", "pod-token-2");
        let second = creds_of(p.resolve(&c).await.unwrap());
        assert_eq!(second.access_key_id.expose(), "ASIA1");
        assert_eq!(state.seen.lock().unwrap()[1].1, "pod-token-2");
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_refresh() {
        let (state, base) = started(3600).await;
        state.delay_ms.store(150, Ordering::SeqCst);
        let p = Arc::new(CredentialProvider::new(
            AwsAuth::Container {
                full_uri: format!("{base}/container-credentials"),
                token_file: None,
            },
            "us-east-1",
            FakeReader::with_env(&[]),
        ));
        let c = client();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (p, c) = (p.clone(), c.clone());
            tasks.push(tokio::spawn(
                async move { creds_of(p.resolve(&c).await.unwrap()) },
            ));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().access_key_id.expose(), "ASIA0");
        }
        assert_eq!(state.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_valid_credentials_and_expired_ones_are_an_error() {
        let (state, base) = started(3600).await;
        let p = CredentialProvider::new(
            AwsAuth::Container {
                full_uri: format!("{base}/container-credentials"),
                token_file: None,
            },
            "us-east-1",
            FakeReader::with_env(&[]),
        );
        let c = client();
        let first = creds_of(p.resolve(&c).await.unwrap());
        state.failing.store(true, Ordering::SeqCst);
        let set_left = |secs: i64| {
            if let Ok(mut cache) = p.cache.lock() {
                let cached = cache.as_mut().unwrap();
                cached.creds.expires = Some(
                    Timestamp::now()
                        .checked_add(jiff::SignedDuration::from_secs(secs))
                        .unwrap(),
                );
                cached.quiet_until = None;
            }
        };
        set_left(60);
        assert_eq!(
            creds_of(p.resolve(&c).await.unwrap()).access_key_id,
            first.access_key_id
        );
        assert!(p.warned.load(Ordering::SeqCst));
        // Quiet period: no new attempt right after a failure.
        let hits = state.hits.load(Ordering::SeqCst);
        p.resolve(&c).await.unwrap();
        assert_eq!(state.hits.load(Ordering::SeqCst), hits);
        // Expired: the failure is the answer, without any secret in it.
        set_left(-1);
        let err = p.resolve(&c).await.unwrap_err();
        assert!(err.contains("answered 500"), "{err}");
        assert!(!err.contains("sec0") && !err.contains("tok0"), "{err}");
        // Recovery clears the warning.
        state.failing.store(false, Ordering::SeqCst);
        p.resolve(&c).await.unwrap();
        assert!(!p.warned.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn web_identity_posts_the_form_and_reads_the_xml() {
        let (state, base) = started(900).await;
        let reader = FakeReader::with_env(&[]);
        reader.set_file("/var/run/token", "jwt.one\n");
        let p = CredentialProvider::new(
            AwsAuth::WebIdentity {
                role_arn: "arn:aws:iam::123456789012:role/gw".into(),
                token_file: "/var/run/token".into(),
                session_name: Some("s1".into()),
                sts_endpoint: Some(format!("{base}/sts/")),
            },
            "eu-west-1",
            reader.clone(),
        );
        let c = client();
        let creds = creds_of(p.resolve(&c).await.unwrap());
        assert_eq!(creds.secret_access_key.expose(), "sec&0", "entities decoded");
        assert_eq!(creds.session_token.unwrap().expose(), "tok0");
        let seen = state.seen.lock().unwrap().clone();
        let form: HashMap<String, String> = url::form_urlencoded::parse(seen[0].2.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(form["Action"], "AssumeRoleWithWebIdentity");
        assert_eq!(form["Version"], "2011-06-15");
        assert_eq!(form["RoleArn"], "arn:aws:iam::123456789012:role/gw");
        assert_eq!(form["RoleSessionName"], "s1");
        assert_eq!(form["WebIdentityToken"], "jwt.one");
        assert_eq!(seen[0].1, "", "STS is called unsigned");
    }

    #[tokio::test]
    async fn the_environment_chain_follows_the_sdk_order() {
        let c = client();
        let resolve = |pairs: &[(&str, &str)]| {
            CredentialProvider::new(AwsAuth::Environment, "us-east-1", FakeReader::with_env(pairs))
        };
        let all = [
            ("AWS_BEARER_TOKEN_BEDROCK", "bedrock-key"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
            ("AWS_SESSION_TOKEN", "TOKEN"),
        ];
        assert_eq!(
            resolve(&all).resolve(&c).await.unwrap(),
            Resolved::ApiKey(Secret::new("bedrock-key"))
        );
        let c2 = creds_of(resolve(&all[1..]).resolve(&c).await.unwrap());
        assert_eq!(
            (c2.access_key_id.expose(), c2.session_token.unwrap().expose()),
            ("AKID", "TOKEN")
        );
        let err = resolve(&[("AWS_ACCESS_KEY_ID", "AKID")])
            .resolve(&c)
            .await
            .unwrap_err();
        assert!(err.contains("without AWS_SECRET_ACCESS_KEY") && !err.contains("AKID\""));
        let err = resolve(&[]).resolve(&c).await.unwrap_err();
        assert!(err.starts_with("no AWS credentials"), "{err}");

        // Web identity before container; STS endpoint from AWS_ENDPOINT_URL_STS.
        let (state, base) = started(900).await;
        let sts = format!("{base}/sts/");
        let container = format!("{base}/container-credentials");
        let p = resolve(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_ENDPOINT_URL_STS", &sts),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &container),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ctok"),
        ]);
        let err = p.resolve(&c).await.unwrap_err();
        assert!(err.contains("web identity token file /t"), "{err}");
        let p = resolve(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &container),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ctok"),
        ]);
        p.resolve(&c).await.unwrap();
        let seen = state.seen.lock().unwrap().clone();
        assert_eq!(
            (seen[0].0.as_str(), seen[0].1.as_str()),
            ("/container-credentials", "ctok")
        );
    }

    #[test]
    fn xml_and_json_answers_parse_and_errors_name_no_secret() {
        assert_eq!(xml_unescape("a&lt;b&gt;&#65;&#x42;&bogus;&"), "a<b>AB&bogus;&");
        assert!(parse_sts("<AccessKeyId>x</AccessKeyId>").is_err());
        let err = parse_container(br#"{"AccessKeyId":"AKIAVERYSECRET","SecretAccessKey":1}"#).unwrap_err();
        assert!(!err.contains("VERYSECRET"), "{err}");
        let c = parse_container(br#"{"AccessKeyId":"a","SecretAccessKey":"b"}"#).unwrap();
        assert!(c.session_token.is_none() && c.expires.is_some());
    }
}
