//! The load generator: tokio + hyper HTTP/1.1 over a bounded set of keep-alive connections.
//!
//! Each worker task owns one connection (opened on first use, reopened after an error) and
//! sends the same pre-built request over and over, reading every response body to its end.
//!
//! * Open loop ([`open_loop`]): a dedicated OS thread releases one permit per scheduled send
//!   time (`nanosleep` precision instead of Tokio's 1 ms timer wheel); idle workers take the
//!   permits in FIFO order. Latency is measured from the *scheduled* send time, so time spent
//!   waiting for a free connection counts (no coordinated omission). Sends still pending when
//!   the cell's grace period ends are reported as not sent.
//! * Closed loop ([`closed_loop`]): every worker sends its next request as soon as the
//!   previous response ended; latency is measured from the actual send.
//!
//! Connections are hyper's low-level `client::conn::http1` handles rather than hyper-util's
//! pooled legacy `Client`: that pool opens an extra connection whenever a checkout races a
//! connect, so the bound on connections would only be approximate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A client-side connection handle.
type Sender = SendRequest<Full<Bytes>>;

/// The one request a cell sends, pre-built: only the `Bytes` body's reference count and the
/// header map are cloned per request.
pub struct RequestSpec {
    /// `POST` target in origin form (`/v1/messages?beta=true`).
    pub uri: Uri,
    /// Every header, `host` included (hyper's connection API adds none).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl RequestSpec {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Keep-alive connections to one address, kept between cells so that each cell starts warm.
pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Sender>>,
}

impl Pool {
    /// An empty pool for `addr`.
    pub fn new(addr: SocketAddr) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Option<Sender> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> anyhow::Result<Sender> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// One worker's connection.
struct Conn {
    pool: Arc<Pool>,
    sender: Option<Sender>,
}

impl Conn {
    fn new(pool: &Arc<Pool>) -> Conn {
        Conn {
            sender: pool.take(),
            pool: pool.clone(),
        }
    }

    /// Sends one request and reads the whole response body; errors on anything but 200.
    async fn send(&mut self, spec: &RequestSpec) -> anyhow::Result<u64> {
        let result = self.try_send(spec).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_send(&mut self, spec: &RequestSpec) -> anyhow::Result<u64> {
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            slot => slot.insert(self.pool.connect().await?),
        };
        sender.ready().await?;
        let resp = sender.send_request(spec.request()).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                bytes += data.len() as u64;
            }
        }
        if status != http::StatusCode::OK {
            bail!("HTTP {status}");
        }
        Ok(bytes)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(sender);
        }
    }
}

/// What a worker (and, merged, a cell) observed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of every successful request, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Failed requests (connection errors, non-200 statuses, timeouts at the end of the cell).
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Open loop: scheduled sends never issued before the cell's grace period ended.
    pub not_sent: u64,
    /// Open loop: how late each request was sent after its scheduled time, in microseconds.
    pub send_lag_us: Vec<u32>,
    /// Response body bytes read.
    pub body_bytes: u64,
    /// From the (scheduled) start to the last completion.
    pub elapsed: Duration,
}

impl Outcome {
    fn record(&mut self, result: anyhow::Result<u64>, latency: Duration) {
        match result {
            Ok(bytes) => {
                self.body_bytes += bytes;
                self.latencies_us
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
            Err(e) => self.error(format!("{e:#}")),
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        self.send_lag_us.extend(other.send_lag_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.not_sent += other.not_sent;
        self.body_bytes += other.body_bytes;
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    /// Adds a later run of the same cell: everything summed, elapsed times included.
    pub fn absorb(&mut self, other: Outcome) {
        let elapsed = self.elapsed + other.elapsed;
        self.merge(other);
        self.elapsed = elapsed;
    }

    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// Successful requests per second of [`Outcome::elapsed`].
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.ok() as f64 / secs } else { 0.0 }
    }

    /// Sorts the latencies (before [`Outcome::percentile_ms`]).
    pub fn sort(&mut self) {
        self.latencies_us.sort_unstable();
        self.send_lag_us.sort_unstable();
    }

    /// The `q` quantile of the sorted send lags, in milliseconds (open loop only).
    pub fn send_lag_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.send_lag_us, q)
    }

    /// The `q` quantile (0..=1) of the sorted latencies, in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.latencies_us, q)
    }
}

/// The `q` quantile (0..=1) of sorted microseconds, in milliseconds.
fn quantile(sorted_us: &[u32], q: f64) -> Option<f64> {
    let n = sorted_us.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(f64::from(sorted_us[rank - 1]) / 1000.0)
}

/// Sends `rate` requests per second for `duration` on a fixed schedule over at most
/// `connections` connections; in-flight requests and the backlog get `grace` more time.
pub async fn open_loop(
    pool: &Arc<Pool>,
    spec: &Arc<RequestSpec>,
    rate: f64,
    duration: Duration,
    connections: usize,
    grace: Duration,
) -> Outcome {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval_ns = 1e9 / rate;
    let permits = Arc::new(Semaphore::new(0));
    let next_slot = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    // A little in the future, so that every worker is waiting when the first slot is due.
    let start = Instant::now() + Duration::from_millis(5);
    let hard_end = start + duration + grace;
    let slot_time = move |i: u64| start + Duration::from_nanos((i as f64 * interval_ns) as u64);

    let scheduler = {
        let permits = permits.clone();
        let start = start.into_std();
        std::thread::spawn(move || {
            let mut released = 0u64;
            while released < total {
                let now = std::time::Instant::now();
                let since = now.saturating_duration_since(start).as_nanos() as f64;
                let due = if now < start {
                    0
                } else {
                    ((since / interval_ns) as u64 + 1).min(total)
                };
                if due > released {
                    permits.add_permits((due - released) as usize);
                    released = due;
                }
                if released < total {
                    let next = start + Duration::from_nanos((released as f64 * interval_ns) as u64);
                    let now = std::time::Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                }
            }
        })
    };

    let mut workers = JoinSet::new();
    for _ in 0..connections.max(1) {
        let (pool, spec) = (pool.clone(), spec.clone());
        let (permits, next_slot, finished) = (permits.clone(), next_slot.clone(), finished.clone());
        workers.spawn(async move {
            let mut conn = Conn::new(&pool);
            let mut out = Outcome::default();
            let mut last = start;
            while let Ok(permit) = permits.acquire().await {
                permit.forget();
                if Instant::now() >= hard_end {
                    break;
                }
                let scheduled = slot_time(next_slot.fetch_add(1, Ordering::Relaxed));
                let lag = Instant::now().saturating_duration_since(scheduled);
                out.send_lag_us
                    .push(u32::try_from(lag.as_micros()).unwrap_or(u32::MAX));
                match tokio::time::timeout_at(hard_end, conn.send(&spec)).await {
                    Ok(result) => {
                        last = Instant::now();
                        out.record(result, last.saturating_duration_since(scheduled));
                    }
                    Err(_) => {
                        out.error("still in flight when the cell ended".into());
                        conn.sender = None;
                    }
                }
                finished.fetch_add(1, Ordering::Relaxed);
            }
            out.elapsed = last.saturating_duration_since(start);
            out
        });
    }

    while finished.load(Ordering::Relaxed) < total && Instant::now() < hard_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    permits.close();
    let mut merged = Outcome::default();
    while let Some(worker) = workers.join_next().await {
        match worker {
            Ok(out) => merged.merge(out),
            Err(e) => merged.error(format!("worker failed: {e}")),
        }
    }
    let _ = tokio::task::spawn_blocking(move || scheduler.join()).await;
    let issued = next_slot.load(Ordering::Relaxed).min(total);
    merged.not_sent = total - issued;
    merged
}

/// Keeps `connections` requests in flight for `duration` (each connection sends its next request
/// as soon as the previous response ended).
pub async fn closed_loop(
    pool: &Arc<Pool>,
    spec: &Arc<RequestSpec>,
    duration: Duration,
    connections: usize,
    grace: Duration,
) -> Outcome {
    let start = Instant::now();
    let end = start + duration;
    let hard_end = end + grace;
    let mut workers = JoinSet::new();
    for _ in 0..connections.max(1) {
        let (pool, spec) = (pool.clone(), spec.clone());
        workers.spawn(async move {
            let mut conn = Conn::new(&pool);
            let mut out = Outcome::default();
            let mut last = start;
            while Instant::now() < end {
                let sent = Instant::now();
                match tokio::time::timeout_at(hard_end, conn.send(&spec)).await {
                    Ok(result) => {
                        last = Instant::now();
                        out.record(result, last.saturating_duration_since(sent));
                    }
                    Err(_) => {
                        out.error("still in flight when the cell ended".into());
                        conn.sender = None;
                    }
                }
            }
            out.elapsed = last.saturating_duration_since(start);
            out
        });
    }
    let mut merged = Outcome::default();
    while let Some(worker) = workers.join_next().await {
        match worker {
            Ok(out) => merged.merge(out),
            Err(e) => merged.error(format!("worker failed: {e}")),
        }
    }
    merged
}

/// Sends one request on a fresh connection and returns the status, content type and body.
pub async fn probe(addr: SocketAddr, spec: &RequestSpec) -> anyhow::Result<(u16, String, Bytes)> {
    let pool = Pool::new(addr);
    let mut sender = pool.connect().await?;
    sender.ready().await?;
    let resp = sender.send_request(spec.request()).await?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, content_type, body))
}
