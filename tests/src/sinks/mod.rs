//! Faithful fake receivers of each audit sink wire format, for the audit trail's tests.
//!
//! [`Receiver::start`] binds a loopback HTTP/1.1 server speaking one format:
//!
//! * [`Format::Webhook`]: `POST /` of a JSON array; with a secret, the
//!   `x-tollgate-signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` header is
//!   required and checked (401 otherwise).
//! * [`Format::Elasticsearch`]: `POST /_bulk` NDJSON, as Elasticsearch and OpenSearch answer it:
//!   the body must end with a newline (400), `authorization: ApiKey <key>` when a key is set
//!   (401 `security_exception`), `create` of an existing `_id` is a per-item 409
//!   `version_conflict_engine_exception` with `"errors": true`, `index` overwrites.
//! * [`Format::Splunk`]: `POST /services/collector/event`, `authorization: Splunk <token>`
//!   (401 code 2 without, 403 code 4 wrong), a stream of event objects each needing `event`
//!   (400 code 12 with `invalid-event-number`) and a numeric `time`; `{"text":"Success","code":0}`.
//! * [`Format::Datadog`]: `POST /api/v2/logs`, `DD-API-KEY` (403), a JSON array of at most
//!   1000 entries (413 past it), `202 {}`; each entry's `message` holds the record.
//!
//! [`Receiver::set_down`] makes it answer 503 (in its format) to simulate an outage.
//! [`moto`] runs the `moto` S3 server from `e2e/.venv`.

pub mod moto;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Which wire format a receiver speaks, and the credential it requires.
#[derive(Debug, Clone)]
pub enum Format {
    /// Webhook; the HMAC secret it checks signatures with.
    Webhook(Option<String>),
    /// Elasticsearch `_bulk`; the API key it requires.
    Elasticsearch(Option<String>),
    /// Splunk HEC; the token.
    Splunk(String),
    /// Datadog logs intake; the API key.
    Datadog(String),
}

#[derive(Default)]
struct State {
    /// Records received, in arrival order, duplicates included (ES: documents created).
    records: Vec<Value>,
    /// Elasticsearch documents by `_id`.
    docs: HashMap<String, Value>,
    /// Requests that broke the wire format.
    violations: Vec<String>,
}

struct Shared {
    format: Format,
    down: AtomicBool,
    requests: AtomicU64,
    accepted: AtomicU64,
    state: Mutex<State>,
}

/// A running fake receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn header<'a>(req: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

impl Receiver {
    /// Starts a receiver on an ephemeral loopback port.
    pub async fn start(format: Format) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            format,
            down: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(handle(&s, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Receiver { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Simulates an outage (503) or ends it.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Requests received, accepted or not.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests accepted.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many records were received, duplicates included (cheap: no copy).
    pub fn count(&self) -> usize {
        self.shared
            .state
            .lock()
            .map(|s| s.records.len())
            .unwrap_or_default()
    }

    /// Every record received, in arrival order, duplicates included.
    pub fn records(&self) -> Vec<Value> {
        self.shared
            .state
            .lock()
            .map(|s| s.records.clone())
            .unwrap_or_default()
    }

    /// Records de-duplicated by event id (first arrival kept), in arrival order.
    pub fn unique_records(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.records()
            .into_iter()
            .filter(|r| seen.insert(r["id"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }

    /// Wire-format violations seen (empty for a well-behaved client).
    pub fn violations(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .map(|s| s.violations.clone())
            .unwrap_or_default()
    }
}

async fn handle(s: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, json!({"error": "body"})),
    };
    let violation = |msg: String| {
        if let Ok(mut st) = s.state.lock() {
            st.violations.push(msg);
        }
    };
    if s.down.load(Ordering::SeqCst) {
        return match s.format {
            Format::Splunk(_) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"text": "Server is busy", "code": 9}),
            ),
            Format::Elasticsearch(_) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"type": "unavailable_shards_exception", "reason": "down"}, "status": 503}),
            ),
            _ => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"errors": ["Service Unavailable"]}),
            ),
        };
    }
    let resp = match &s.format {
        Format::Webhook(secret) => webhook(s, &parts, &body, secret.as_deref(), violation),
        Format::Elasticsearch(key) => elasticsearch(s, &parts, &body, key.as_deref(), violation),
        Format::Splunk(token) => splunk(s, &parts, &body, token, violation),
        Format::Datadog(key) => datadog(s, &parts, &body, key, violation),
    };
    if resp.status().is_success() {
        s.accepted.fetch_add(1, Ordering::SeqCst);
    }
    resp
}

fn push(s: &Shared, records: Vec<Value>) {
    if let Ok(mut st) = s.state.lock() {
        st.records.extend(records);
    }
}

/// Checks `t=<unix>,v1=<hex>` against the body.
pub fn check_webhook_signature(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(sig) = hex::decode(v1) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = Vec::with_capacity(body.len() + 16);
    msg.extend_from_slice(t.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    ring::hmac::verify(&key, &msg, &sig).is_ok()
}

fn webhook(
    s: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    secret: Option<&str>,
    violation: impl Fn(String),
) -> Response<Full<Bytes>> {
    if parts.method != http::Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, json!({}));
    }
    if let Some(secret) = secret {
        let ok =
            header(parts, "x-tollgate-signature").is_some_and(|h| check_webhook_signature(secret, h, body));
        if !ok {
            violation("webhook: missing or bad x-tollgate-signature".into());
            return reply(StatusCode::UNAUTHORIZED, json!({"error": "bad signature"}));
        }
    }
    if !header(parts, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        violation("webhook: content-type is not application/json".into());
    }
    match serde_json::from_slice::<Vec<Value>>(body) {
        Ok(records) => {
            push(s, records);
            reply(StatusCode::OK, json!({"ok": true}))
        }
        Err(e) => {
            violation(format!("webhook: body is not a JSON array: {e}"));
            reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}))
        }
    }
}

fn es_error(status: StatusCode, kind: &str, reason: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status.as_u16()}),
    )
}

fn elasticsearch(
    s: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    key: Option<&str>,
    violation: impl Fn(String),
) -> Response<Full<Bytes>> {
    if parts.method != http::Method::POST || parts.uri.path() != "/_bulk" {
        violation(format!(
            "elasticsearch: unexpected {} {}",
            parts.method,
            parts.uri.path()
        ));
        return es_error(
            StatusCode::NOT_FOUND,
            "resource_not_found_exception",
            "no handler",
        );
    }
    if let Some(key) = key {
        if header(parts, "authorization") != Some(&format!("ApiKey {key}")) {
            violation("elasticsearch: bad authorization".into());
            return es_error(
                StatusCode::UNAUTHORIZED,
                "security_exception",
                "missing authentication credentials",
            );
        }
    }
    if !header(parts, "content-type")
        .is_some_and(|c| c.starts_with("application/x-ndjson") || c.starts_with("application/json"))
    {
        violation("elasticsearch: content-type".into());
        return es_error(
            StatusCode::NOT_ACCEPTABLE,
            "media_type",
            "Content-Type header is not supported",
        );
    }
    if !body.ends_with(b"\n") {
        violation("elasticsearch: bulk body not terminated by a newline".into());
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    let text = String::from_utf8_lossy(body);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let mut items = Vec::new();
    let mut errors = false;
    let Ok(mut st) = s.state.lock() else {
        return es_error(StatusCode::INTERNAL_SERVER_ERROR, "lock", "poisoned");
    };
    while let Some(action) = lines.next() {
        let Ok(action) = serde_json::from_str::<Value>(action) else {
            st.violations
                .push("elasticsearch: action line is not JSON".into());
            return es_error(
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                "malformed action",
            );
        };
        let Some((op, meta)) = action.as_object().and_then(|o| o.iter().next()) else {
            return es_error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                "empty action",
            );
        };
        let op = op.clone();
        let index = meta["_index"].as_str().unwrap_or_default().to_owned();
        let id = meta["_id"].as_str().unwrap_or_default().to_owned();
        let Some(source) = lines.next().and_then(|l| serde_json::from_str::<Value>(l).ok()) else {
            st.violations
                .push("elasticsearch: missing or bad source line".into());
            return es_error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                "Validation Failed: 1: no requests added;",
            );
        };
        if id.is_empty() {
            st.violations.push("elasticsearch: action without _id".into());
        }
        let exists = st.docs.contains_key(&id);
        let item = match op.as_str() {
            "create" if exists => {
                errors = true;
                json!({"create": {"_index": index, "_id": id, "status": 409, "error": {
                    "type": "version_conflict_engine_exception",
                    "reason": format!("[{id}]: version conflict, document already exists (current version [1])"),
                    "index": index}}})
            }
            "create" | "index" => {
                st.docs.insert(id.clone(), source.clone());
                st.records.push(source);
                json!({op.clone(): {"_index": index, "_id": id, "_version": 1, "result": "created", "status": 201}})
            }
            other => {
                st.violations
                    .push(format!("elasticsearch: unexpected op {other}"));
                return es_error(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    "unsupported op",
                );
            }
        };
        items.push(item);
    }
    reply(
        StatusCode::OK,
        json!({"took": 1, "errors": errors, "items": items}),
    )
}

fn splunk(
    s: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    token: &str,
    violation: impl Fn(String),
) -> Response<Full<Bytes>> {
    if !matches!(
        parts.uri.path(),
        "/services/collector/event" | "/services/collector"
    ) {
        violation(format!("splunk: unexpected path {}", parts.uri.path()));
        return reply(
            StatusCode::NOT_FOUND,
            json!({"text": "The requested URL was not found on this server.", "code": 404}),
        );
    }
    match header(parts, "authorization") {
        None => {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"text": "Token is required", "code": 2}),
            );
        }
        Some(h) if h != format!("Splunk {token}") => {
            violation("splunk: wrong token".into());
            return reply(StatusCode::FORBIDDEN, json!({"text": "Invalid token", "code": 4}));
        }
        Some(_) => {}
    }
    let mut events = Vec::new();
    for (i, ev) in serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .enumerate()
    {
        let Ok(ev) = ev else {
            violation("splunk: invalid JSON".into());
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"text": "Invalid data format", "code": 6, "invalid-event-number": i}),
            );
        };
        let event = &ev["event"];
        if event.is_null() || event.as_str() == Some("") {
            violation("splunk: event without event field".into());
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"text": "Event field is required", "code": 12, "invalid-event-number": i}),
            );
        }
        let time_ok = match &ev["time"] {
            Value::Null => true,
            Value::Number(_) => true,
            Value::String(t) => t.parse::<f64>().is_ok(),
            _ => false,
        };
        if !time_ok {
            violation("splunk: bad time".into());
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"text": "Error in handling indexed fields", "code": 15, "invalid-event-number": i}),
            );
        }
        events.push(event.clone());
    }
    if events.is_empty() {
        return reply(StatusCode::BAD_REQUEST, json!({"text": "No data", "code": 5}));
    }
    push(s, events);
    reply(StatusCode::OK, json!({"text": "Success", "code": 0}))
}

fn datadog(
    s: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    key: &str,
    violation: impl Fn(String),
) -> Response<Full<Bytes>> {
    if parts.uri.path() != "/api/v2/logs" || parts.method != http::Method::POST {
        violation(format!(
            "datadog: unexpected {} {}",
            parts.method,
            parts.uri.path()
        ));
        return reply(StatusCode::NOT_FOUND, json!({"errors": ["Not found"]}));
    }
    if header(parts, "dd-api-key") != Some(key) {
        violation("datadog: bad DD-API-KEY".into());
        return reply(StatusCode::FORBIDDEN, json!({"errors": ["Forbidden"]}));
    }
    if body.len() > 5 << 20 {
        violation("datadog: payload over 5 MB".into());
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"errors": ["Payload too large"]}),
        );
    }
    let entries = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(a)) => a,
        Ok(o @ Value::Object(_)) => vec![o],
        _ => {
            violation("datadog: body is not JSON".into());
            return reply(StatusCode::BAD_REQUEST, json!({"errors": ["Bad Request"]}));
        }
    };
    if entries.len() > 1000 {
        violation("datadog: more than 1000 entries".into());
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"errors": ["Too many entries"]}),
        );
    }
    let mut records = Vec::new();
    for e in entries {
        match e["message"].as_str().map(serde_json::from_str::<Value>) {
            Some(Ok(r)) => records.push(r),
            _ => violation("datadog: entry without a JSON message".into()),
        }
    }
    push(s, records);
    reply(StatusCode::ACCEPTED, json!({}))
}
