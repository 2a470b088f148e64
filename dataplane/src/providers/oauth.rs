//! OAuth2 access tokens for the cloud providers (Google for Vertex AI, Microsoft Entra for
//! Foundry): a cache that refreshes ahead of expiry, and the two token-endpoint exchanges.
//!
//! Guarantees of [`TokenCache`]:
//! * a token is used until [`REFRESH_MARGIN`] before it expires, then refreshed;
//! * single flight: however many requests find the token due, one refresh runs; requests that
//!   still hold a valid token use it meanwhile, the others wait for that refresh;
//! * a failed refresh while the old token is still valid keeps the old token and logs one
//!   warning (until a refresh succeeds again), retrying at most every [`RETRY_AFTER_FAILURE`];
//! * errors and logs name the token source, never a token or a credential.
//!
//! Not guaranteed: that the provider still honours a cached token (a revoked credential
//! shows up as the provider's 401; the provider modules then [`TokenCache::invalidate`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;

use crate::secret::Secret;
use crate::upstream::{HttpClient, error_chain};

/// How long before expiry a token is refreshed.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// After a failed refresh with the old token still valid, how long until the next attempt.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// How long one token-endpoint exchange may take.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest token-endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// The monotonic clock a cache reads (substituted in tests).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// A freshly issued access token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The bearer token.
    pub token: Secret,
    /// Its lifetime from now.
    pub expires_in: Duration,
}

#[derive(Default)]
struct State {
    current: Option<(Secret, Instant)>,
    last_failure: Option<Instant>,
    warned: bool,
}

/// A cached access token, refreshed ahead of expiry with single flight (see the module doc).
pub struct TokenCache {
    source: String,
    clock: Clock,
    state: Mutex<State>,
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache for tokens from `source` (named in errors and logs).
    pub fn new(source: impl Into<String>) -> Self {
        Self::with_clock(source, Arc::new(Instant::now))
    }

    /// Like [`TokenCache::new`] with a given clock.
    pub fn with_clock(source: impl Into<String>, clock: Clock) -> Self {
        Self {
            source: source.into(),
            clock,
            state: Mutex::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached token while it is not due for refresh; else the token `fetch` issues (one
    /// fetch at a time), or the old token while it is still valid and `fetch` fails.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Secret, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<IssuedToken, String>>,
    {
        let valid = match self.usable() {
            Usable::Fresh(t) => return Ok(t),
            Usable::Valid(t) => Some(t),
            Usable::None => None,
        };
        let _guard = match (self.refresh.try_lock(), valid) {
            (Ok(g), _) => g,
            // Someone is refreshing and this request still holds a valid token: use it.
            (Err(_), Some(t)) => return Ok(t),
            (Err(_), None) => self.refresh.lock().await,
        };
        // The refresh this request waited for may have succeeded.
        let valid = match self.usable() {
            Usable::Fresh(t) => return Ok(t),
            Usable::Valid(t) => Some(t),
            Usable::None => None,
        };
        if let (Some(t), Some(failed)) = (&valid, self.lock().last_failure) {
            if (self.clock)().saturating_duration_since(failed) < RETRY_AFTER_FAILURE {
                return Ok(t.clone());
            }
        }
        match fetch().await {
            Ok(issued) => {
                let mut state = self.lock();
                let expires_at = (self.clock)() + issued.expires_in;
                state.current = Some((issued.token.clone(), expires_at));
                state.last_failure = None;
                state.warned = false;
                Ok(issued.token)
            }
            Err(why) => {
                let mut state = self.lock();
                state.last_failure = Some((self.clock)());
                match valid {
                    Some(t) => {
                        if !std::mem::replace(&mut state.warned, true) {
                            tracing::warn!(
                                source = %self.source,
                                error = %why,
                                "access token refresh failed; using the current token until it expires"
                            );
                        }
                        Ok(t)
                    }
                    None => Err(format!("no access token from {}: {why}", self.source)),
                }
            }
        }
    }

    /// Forgets the cached token (the provider refused it): the next request fetches anew.
    pub fn invalidate(&self) {
        let mut state = self.lock();
        state.current = None;
        state.last_failure = None;
    }

    fn usable(&self) -> Usable {
        let now = (self.clock)();
        match &self.lock().current {
            Some((t, exp)) if now + REFRESH_MARGIN < *exp => Usable::Fresh(t.clone()),
            Some((t, exp)) if now < *exp => Usable::Valid(t.clone()),
            _ => Usable::None,
        }
    }
}

enum Usable {
    Fresh(Secret),
    Valid(Secret),
    None,
}

/// A token endpoint's answer (Google and Entra share the shape; Entra v1 sent numbers as
/// strings).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Exchanges at a token endpoint: `POST url` with `form` (urlencoded), or `GET url` when `form`
/// is `None`, with `extra` headers; returns the issued token. Errors name `source` and the
/// endpoint's `error`/`error_description`, never the form (it carries credentials).
pub async fn exchange(
    client: &HttpClient,
    source: &str,
    url: &str,
    form: Option<&[(&str, &str)]>,
    extra: &[(&'static str, &'static str)],
) -> Result<IssuedToken, String> {
    let (method, body) = match form {
        Some(pairs) => {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                s.append_pair(k, v);
            }
            (Method::POST, Bytes::from(s.finish()))
        }
        None => (Method::GET, Bytes::new()),
    };
    let mut builder = Request::builder().method(method.clone()).uri(url);
    if method == Method::POST {
        builder = builder
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::CONTENT_LENGTH, body.len());
    }
    builder = builder.header(header::ACCEPT, HeaderValue::from_static("application/json"));
    for (k, v) in extra {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(Full::new(body))
        .map_err(|e| format!("{source}: bad token endpoint URL {url:?}: {e}"))?;
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{source}: token endpoint {url} unreachable: {}", error_chain(&e)))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("{source}: reading the token endpoint's answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(TOKEN_TIMEOUT, call)
        .await
        .map_err(|_| format!("{source}: token endpoint {url} did not answer within {TOKEN_TIMEOUT:?}"))??;
    let parsed: Option<TokenResponse> = serde_json::from_slice(&bytes).ok();
    if !status.is_success() {
        let detail = parsed
            .map(|p| {
                let mut d = p.error.unwrap_or_default();
                if let Some(desc) = p.error_description {
                    d.push_str(": ");
                    d.push_str(&desc);
                }
                d
            })
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "no OAuth error in the answer".to_owned());
        return Err(format!(
            "{source}: token endpoint answered {status}: {}",
            clip(&detail)
        ));
    }
    let parsed = parsed.ok_or_else(|| format!("{source}: the token endpoint's answer is not JSON"))?;
    let token = parsed
        .access_token
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| format!("{source}: the token endpoint's answer has no access_token"))?;
    let expires_in = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{source}: the token endpoint's answer has no valid expires_in"))?;
    Ok(IssuedToken {
        token: Secret::new(&token),
        expires_in: Duration::from_secs(expires_in),
    })
}

/// At most 300 characters of an endpoint's error text.
fn clip(s: &str) -> String {
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// `Bearer <token>` as a sensitive header value; the error names `source`, not the token.
pub fn bearer(source: &str, token: &Secret) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| format!("the access token from {source} is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A clock the test moves by hand.
    pub(crate) struct FakeClock(Mutex<Instant>);

    impl FakeClock {
        pub(crate) fn new() -> Arc<Self> {
            Arc::new(Self(Mutex::new(Instant::now())))
        }
        pub(crate) fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
        pub(crate) fn clock(self: &Arc<Self>) -> Clock {
            let me = self.clone();
            Arc::new(move || *me.0.lock().unwrap())
        }
    }

    /// One request a [`TestServer`] received.
    #[derive(Debug, Clone)]
    pub(crate) struct Recorded {
        pub(crate) method: String,
        pub(crate) path: String,
        pub(crate) headers: http::HeaderMap,
        pub(crate) body: Bytes,
    }

    type Handler = Arc<dyn Fn(&Recorded) -> (u16, String) + Send + Sync>;

    /// A loopback HTTP/1.1 server answering every request with `handler`, recording them.
    pub(crate) struct TestServer {
        pub(crate) url: String,
        seen: Arc<Mutex<Vec<Recorded>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl TestServer {
        pub(crate) async fn start(
            handler: impl Fn(&Recorded) -> (u16, String) + Send + Sync + 'static,
        ) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
            let handler: Handler = Arc::new(handler);
            let (seen2, handler2) = (seen.clone(), handler.clone());
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (seen, handler) = (seen2.clone(), handler2.clone());
                    tokio::spawn(async move {
                        let svc =
                            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                                let (seen, handler) = (seen.clone(), handler.clone());
                                async move {
                                    let (parts, body) = req.into_parts();
                                    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                                    let rec = Recorded {
                                        method: parts.method.to_string(),
                                        path: parts.uri.path().to_owned(),
                                        headers: parts.headers,
                                        body,
                                    };
                                    let (status, text) = handler(&rec);
                                    seen.lock().unwrap().push(rec);
                                    let resp = http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(text)))
                                        .unwrap();
                                    Ok::<_, std::convert::Infallible>(resp)
                                }
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            TestServer { url, seen, task }
        }

        pub(crate) fn requests(&self) -> Vec<Recorded> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn issued(t: &str, secs: u64) -> Result<IssuedToken, String> {
        Ok(IssuedToken {
            token: Secret::new(t),
            expires_in: Duration::from_secs(secs),
        })
    }

    #[tokio::test]
    async fn a_token_is_reused_until_five_minutes_before_expiry_then_refreshed() {
        let clock = FakeClock::new();
        let cache = TokenCache::with_clock("test", clock.clock());
        let fetches = AtomicUsize::new(0);
        let fetch = |name: &'static str| {
            let fetches = &fetches;
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                issued(name, 3600)
            }
        };
        assert_eq!(cache.get(fetch("t1")).await.unwrap().expose(), "t1");
        clock.advance(Duration::from_secs(3600 - 301));
        assert_eq!(cache.get(fetch("t2")).await.unwrap().expose(), "t1");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(2));
        assert_eq!(cache.get(fetch("t2")).await.unwrap().expose(), "t2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        cache.invalidate();
        assert_eq!(cache.get(fetch("t3")).await.unwrap().expose(), "t3");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_valid_token_and_fails_once_it_expired() {
        let clock = FakeClock::new();
        let cache = TokenCache::with_clock("test source", clock.clock());
        cache.get(|| async { issued("old", 600) }).await.unwrap();
        clock.advance(Duration::from_secs(400)); // due (200 s left), still valid
        let failing = || async { Err::<IssuedToken, _>("endpoint down".to_owned()) };
        assert_eq!(cache.get(failing).await.unwrap().expose(), "old");
        // Within RETRY_AFTER_FAILURE no new attempt is made.
        let never = || async { panic!("retried too soon") };
        assert_eq!(cache.get(never).await.unwrap().expose(), "old");
        clock.advance(Duration::from_secs(201));
        let err = cache.get(failing).await.unwrap_err();
        assert!(
            err.contains("test source") && err.contains("endpoint down"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_refresh() {
        let cache = Arc::new(TokenCache::new("test"));
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        issued("shared", 3600)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose(), "shared");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn bearer_is_sensitive_and_its_error_has_no_token() {
        let v = bearer("src", &Secret::new("abc")).unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v, "Bearer abc");
        let err = bearer("src", &Secret::new("bad\nvalue-secret")).unwrap_err();
        assert!(!err.contains("value-secret"));
    }
}
