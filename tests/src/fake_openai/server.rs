//! The HTTP plumbing shared by the fake OpenAI and the fake Gemini: a hyper 1 HTTP/1.1 server
//! (keep-alive, `TCP_NODELAY`), a bounded request log, the `/_fake/requests` and `/_fake/clear`
//! control endpoints, and a body size limit. Each fake supplies an [`Api`] that routes requests.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::fake_anthropic::{FakeBody, RecordedRequest};

/// A response plus the usage object it carries (for [`RecordedRequest::usage`]).
pub(crate) struct Answer {
    pub response: Response<FakeBody>,
    pub usage: Option<Value>,
}

impl From<Response<FakeBody>> for Answer {
    fn from(response: Response<FakeBody>) -> Self {
        Answer {
            response,
            usage: None,
        }
    }
}

/// A boxed future borrowed from the request.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One wire format served by [`Server`].
pub(crate) trait Api: Send + Sync + 'static {
    /// Answers one request (the body is complete and within the size limit).
    fn route<'a>(&'a self, ctx: &'a Ctx, parts: &'a Parts, body: &'a Bytes) -> BoxFuture<'a, Answer>;

    /// The error response for a body over the size limit (`status` 413) or unreadable (400).
    fn body_error(&self, ctx: &Ctx, status: u16, message: &str) -> Response<FakeBody>;
}

/// Per-request context: the request id and an id generator.
pub(crate) struct Ctx {
    pub request_id: String,
    log: Arc<Log>,
}

impl Ctx {
    /// A fresh, unique identifier with the given prefix (`resp_fake...`).
    pub fn id(&self, prefix: &str) -> String {
        self.log.id(prefix)
    }
}

/// Logging options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogConfig {
    pub record: bool,
    pub max_recorded: usize,
    pub max_body_bytes: usize,
}

pub(crate) struct Log {
    config: LogConfig,
    entries: Mutex<VecDeque<RecordedRequest>>,
    next_id: AtomicU64,
    nonce: u32,
}

impl Log {
    fn entries(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding the lock cannot corrupt a VecDeque of owned values.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}fake{:08x}{n:012x}", self.nonce)
    }

    fn record(&self, entry: RecordedRequest) {
        let max = self.config.max_recorded;
        if !self.config.record || max == 0 {
            return;
        }
        let mut log = self.entries();
        while log.len() >= max {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

/// A running server. Dropping it stops the server and closes its connections.
pub(crate) struct Server {
    addr: SocketAddr,
    log: Arc<Log>,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` (default `127.0.0.1:0`) and serves `api` on the current Tokio runtime.
    pub async fn start<A: Api>(
        name: &str,
        addr: Option<SocketAddr>,
        config: LogConfig,
        api: A,
    ) -> anyhow::Result<Server> {
        let bind = addr.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("{name}: cannot bind {bind}"))?;
        let addr = listener.local_addr()?;
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ u32::from(addr.port());
        let log = Arc::new(Log {
            config,
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            nonce,
        });
        let task = tokio::spawn(accept_loop(listener, log.clone(), Arc::new(api)));
        Ok(Server { addr, log, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log.entries().iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.log.entries().clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop<A: Api>(listener: TcpListener, log: Arc<Log>, api: Arc<A>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let log = log.clone();
        let api = api.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let log = log.clone();
                let api = api.clone();
                async move { Ok::<_, Infallible>(handle(&log, &*api, req).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle<A: Api>(log: &Arc<Log>, api: &A, req: http::Request<Incoming>) -> Response<FakeBody> {
    let (parts, body) = req.into_parts();

    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/_fake/requests") => {
            let value = serde_json::to_value(&*log.entries()).unwrap_or_else(|_| json!([]));
            return json_response(StatusCode::OK, &value);
        }
        (&Method::POST, "/_fake/clear") => {
            let cleared = {
                let mut entries = log.entries();
                let n = entries.len();
                entries.clear();
                n
            };
            return json_response(StatusCode::OK, &json!({"cleared": cleared}));
        }
        _ => {}
    }

    let ctx = Ctx {
        request_id: log.id("req_"),
        log: log.clone(),
    };
    let (body, answer) = match Limited::new(body, log.config.max_body_bytes).collect().await {
        Ok(collected) => {
            let body = collected.to_bytes();
            let answer = api.route(&ctx, &parts, &body).await;
            (body, answer)
        }
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => (
            Bytes::new(),
            api.body_error(&ctx, 413, "Request exceeds the maximum allowed number of bytes.")
                .into(),
        ),
        Err(e) => (
            Bytes::new(),
            api.body_error(&ctx, 400, &format!("Could not read the request body: {e}"))
                .into(),
        ),
    };

    log.record(RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        response_status: answer.response.status().as_u16(),
        usage: answer.usage,
        request_id: ctx.request_id,
    });
    answer.response
}

/// A JSON response with `content-length`.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<FakeBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(FakeBody::full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A streamed `text/event-stream` response of pre-built events, cut after the last one when
/// `cut` (the connection closes without the terminating chunk).
pub(crate) fn sse_response(events: Vec<Bytes>, cut: bool) -> Response<FakeBody> {
    let mut body = FakeBody::chunks(events);
    if cut {
        body = body.then_cut();
    }
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Half of a JSON document, then a cut: a non-streaming reply that breaks off.
pub(crate) fn half_json_then_cut(value: &Value) -> Response<FakeBody> {
    let bytes = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    let half = bytes.slice(..bytes.len() / 2);
    let mut response = Response::new(FakeBody::chunks(vec![half]).then_cut());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `text` cut into pieces of one word each (the whitespace before a word goes with it), so that
/// the concatenation of the pieces is exactly `text`.
pub(crate) fn word_pieces(text: &str) -> Vec<&str> {
    let mut cuts = vec![0];
    let mut prev_ws = true;
    let mut run_start = 0;
    let mut words = 0usize;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if ws && !prev_ws {
            run_start = i;
        }
        if !ws && prev_ws {
            if words > 0 {
                cuts.push(run_start);
            }
            words += 1;
        }
        prev_ws = ws;
    }
    cuts.push(text.len());
    cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// `s` in pieces of at most 9 bytes (on character boundaries), which split JSON strings in the
/// middle; never empty (an empty `s` gives one empty piece).
pub(crate) fn byte_pieces(s: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut cut = rest.len().min(9);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    if pieces.is_empty() {
        pieces.push("");
    }
    pieces
}

/// The command of a prompt asking to "run echo X": `echo X` (to the end of the line), if any.
pub(crate) fn echo_command(prompt: &str) -> Option<String> {
    let at = prompt.find(super::TOOL_TRIGGER)?;
    let rest = &prompt[at + "run ".len()..];
    let line = rest.lines().next().unwrap_or_default().trim_end();
    (line.len() > "echo".len()).then(|| line.to_owned())
}

/// What a shell tool printed, from the text a CLI sends back as the tool's result: Codex's
/// `exec_command` wraps it in `Chunk ID: ...\n...\nOutput:\n<output>`, Gemini CLI's
/// `run_shell_command` in `<untrusted_context>\nOutput: <output>\nProcess Group PGID: ...`.
/// Anything else is returned as is. Trimmed.
pub(crate) fn shell_output(result: &str) -> String {
    let text = result.trim();
    let text = text
        .strip_prefix("<untrusted_context>")
        .and_then(|t| t.strip_suffix("</untrusted_context>"))
        .unwrap_or(text)
        .trim();
    let mut lines = text.lines();
    let mut out: Option<Vec<&str>> = None;
    for line in lines.by_ref() {
        if line == "Output:" {
            out = Some(Vec::new());
            break;
        }
        if let Some(rest) = line.strip_prefix("Output: ") {
            out = Some(vec![rest]);
            break;
        }
    }
    let Some(mut out) = out else {
        return text.to_owned();
    };
    const TRAILERS: [&str; 5] = [
        "Error:",
        "Exit Code:",
        "Signal:",
        "Background PIDs:",
        "Process Group PGID:",
    ];
    for line in lines {
        if TRAILERS.iter().any(|t| line.starts_with(t)) {
            break;
        }
        out.push(line);
    }
    out.join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_rebuild() {
        for text in [
            "Hello from fake-openai.",
            "  a  b ",
            "",
            "one",
            "Tool said: TOOL_OK",
        ] {
            assert_eq!(word_pieces(text).concat(), text);
            assert_eq!(byte_pieces(text).concat(), text);
        }
        assert_eq!(word_pieces("a b c"), ["a", " b", " c"]);
        assert_eq!(byte_pieces("日本語日本語"), ["日本語", "日本語"]);
    }

    #[test]
    fn echo_commands() {
        assert_eq!(echo_command("run echo TOOL_OK"), Some("echo TOOL_OK".into()));
        assert_eq!(
            echo_command("please run echo A B\nthen stop"),
            Some("echo A B".into())
        );
        assert_eq!(echo_command("run echo"), None);
        assert_eq!(echo_command("say hi"), None);
    }

    #[test]
    fn shell_outputs() {
        let codex = "Chunk ID: b8e998\nWall time: 0.0440 seconds\nProcess exited with code 0\n\
                     Original token count: 2\nOutput:\nTOOL_OK\n";
        assert_eq!(shell_output(codex), "TOOL_OK");
        let gemini = "<untrusted_context>\nOutput: TOOL_OK\nProcess Group PGID: 5581\n</untrusted_context>";
        assert_eq!(shell_output(gemini), "TOOL_OK");
        assert_eq!(shell_output(" plain \n"), "plain");
        assert_eq!(shell_output("Output: a\nb\nExit Code: 1"), "a\nb");
    }
}
