//! [`Audit`]: the handle the request path holds. Recording is a `try_send` into the bounded
//! queue: it never blocks, and a full queue is counted, logged, and sealed into the chain as a
//! `gap` record once the writer catches up: never silent. Refusals of unauthenticated
//! requests pass a rate limit ([`super::limiter`]); client-chosen values are clipped
//! ([`events::clip`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::AuditError;
use super::checkpoint::Signer;
use super::events::{self, Event, FIELD_MAX_CHARS, Identity, MESSAGE_MAX_CHARS, Tokens, clip};
use super::limiter::RefusalLimiter;
use super::metrics::AuditMetrics;
use super::sink::{self, RunningSink};
use super::writer::{Acks, Losses, Msg, Writer, WriterSettings};
use crate::denial::Denial;
use crate::policy::document::{AuditConfig, AuditSink, CaptureMode};
use crate::policy::{KeyEntry, Snapshot, SystemCredentials};
use crate::upstream::HttpClient;
use crate::usage::Usage;

/// Default largest captured prompt or completion.
pub const DEFAULT_CAPTURE_MAX_BYTES: usize = 64 << 10;

/// The audit trail of one proxy process (cheap to clone).
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<Msg>,
    dir: PathBuf,
    chain_id: String,
    committed: watch::Receiver<u64>,
    metrics: AuditMetrics,
    settings: Arc<ArcSwap<WriterSettings>>,
    acks: Arc<Acks>,
    sinks: Mutex<HashMap<String, RunningSink>>,
    client: HttpClient,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    full_log: Mutex<(Option<Instant>, u64)>,
    /// Events the queue refused, for the writer's next `gap` record.
    losses: Arc<Losses>,
    refusals: Mutex<RefusalLimiter>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut sinks) = self.sinks.lock() {
            for (_, s) in sinks.drain() {
                s.stop();
            }
        }
    }
}

fn writer_settings(config: Option<&AuditConfig>) -> Result<WriterSettings, AuditError> {
    let spool = config.and_then(|c| c.spool.clone()).unwrap_or_default();
    let mut s = WriterSettings::with_spool(spool);
    if let Some(cp) = config.and_then(|c| c.checkpoint.as_ref()) {
        s.signer = Some(Arc::new(Signer::load(cp.algorithm, &cp.key, &SystemCredentials)?));
        s.checkpoint_every_records = cp.every_records.max(1);
        s.checkpoint_every = Duration::from_secs(cp.every_secs.max(1));
    }
    Ok(s)
}

impl Audit {
    /// Opens (or creates) the spool at `dir`, starts the writer thread and the sinks the
    /// configuration names. Call inside a Tokio runtime.
    ///
    /// A checkpoint key the configuration names but that cannot be read (or is no key) is an
    /// error: the trail would otherwise be written with unsigned checkpoints that nobody asked
    /// for.
    pub fn open(
        dir: &Path,
        config: Option<&AuditConfig>,
        metrics: AuditMetrics,
        client: HttpClient,
    ) -> Result<Audit, AuditError> {
        let settings = writer_settings(config)?;
        let capacity = usize::try_from(settings.spool.queue_capacity.max(1)).unwrap_or(usize::MAX);
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        let acks = Arc::new(Acks::default());
        let losses = Arc::new(Losses::default());
        let (writer, committed) = Writer::open(
            dir,
            settings.clone(),
            acks.clone(),
            losses.clone(),
            metrics.clone(),
        )?;
        let chain_id = writer.chain_id().to_owned();
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name("tollgate-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io("starting the audit writer thread", e))?;
        let audit = Audit {
            inner: Arc::new(Inner {
                tx,
                dir: dir.to_owned(),
                chain_id,
                committed,
                metrics,
                settings,
                acks,
                sinks: Mutex::new(HashMap::new()),
                client,
                writer: Mutex::new(Some(thread)),
                full_log: Mutex::new((None, 0)),
                losses,
                refusals: Mutex::new(RefusalLimiter::default()),
            }),
        };
        audit.configure_sinks(config.map_or(&[][..], |c| &c.sinks));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Refusals held back by the rate limit are summarised once a second.
            let weak = Arc::downgrade(&audit.inner);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    Audit { inner }.flush_suppressed();
                }
            });
        }
        Ok(audit)
    }

    /// Applies a reloaded policy's audit settings: writer settings and the set of sinks
    /// (new sinks start, removed ones stop, changed ones restart from their offsets).
    pub fn configure(&self, config: Option<&AuditConfig>) {
        match writer_settings(config) {
            Ok(s) => self.inner.settings.store(Arc::new(s)),
            Err(e) => tracing::error!(error = %e, "audit settings not applied; keeping the previous ones"),
        }
        self.configure_sinks(config.map_or(&[][..], |c| &c.sinks));
    }

    fn configure_sinks(&self, wanted: &[AuditSink]) {
        let Ok(mut running) = self.inner.sinks.lock() else {
            return;
        };
        running.retain(|name, r| {
            let keep = wanted.iter().any(|w| &w.name == name && *w == r.config);
            if !keep {
                r.stop();
                self.inner.acks.remove(name);
            }
            keep
        });
        for w in wanted {
            if running.contains_key(&w.name) {
                continue;
            }
            match sink::spawn(
                w.clone(),
                &self.inner.dir,
                &self.inner.chain_id,
                self.inner.committed.clone(),
                self.inner.acks.clone(),
                self.inner.metrics.clone(),
                self.inner.client.clone(),
            ) {
                Ok(r) => {
                    running.insert(w.name.clone(), r);
                }
                Err(e) => tracing::error!(sink = %w.name, error = %e, "audit sink not started"),
            }
        }
    }

    /// Hands an event to the writer without waiting. A full queue drops the event, counts it
    /// in `tollgate_audit_records_dropped{reason="queue_full"}` and logs (at most once a second).
    pub fn record(&self, event: Event) {
        let kind = event.kind;
        match self.inner.tx.try_send(Msg::Event(event)) {
            Ok(()) => {
                self.inner.metrics.queue_depth().inc();
            }
            Err(TrySendError::Full(m)) => {
                self.inner.metrics.dropped("queue_full", 1);
                if let Msg::Event(e) = m {
                    self.inner.losses.add("queue_full", e.time);
                }
                self.log_full(kind);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.inner.metrics.dropped("writer_stopped", 1);
                tracing::error!(kind, "audit writer stopped: record dropped");
            }
        }
    }

    fn log_full(&self, kind: &str) {
        let Ok(mut g) = self.inner.full_log.lock() else {
            return;
        };
        g.1 += 1;
        if g.0.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::error!(
                kind,
                dropped = g.1,
                "audit queue full: records dropped (the spool writer is behind; see tollgate_audit_records_dropped)"
            );
            *g = (Some(Instant::now()), 0);
        }
    }

    /// Waits until every event recorded before this call is written; returns the head seq.
    pub fn flush(&self) -> Result<u64, AuditError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Msg::Flush(tx))
            .map_err(|_| AuditError::Config("audit writer stopped".into()))?;
        rx.recv()
            .map_err(|_| AuditError::Config("audit writer stopped".into()))
    }

    /// [`Audit::flush`] from async code.
    pub async fn flush_async(&self) -> Result<u64, AuditError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.flush())
            .await
            .map_err(|e| AuditError::Config(e.to_string()))?
    }

    /// Sequence number of the newest written record.
    pub fn head(&self) -> u64 {
        *self.inner.committed.borrow()
    }

    /// The chain id.
    pub fn chain_id(&self) -> &str {
        &self.inner.chain_id
    }

    /// Records the summary of refusals the rate limit held back, if any were.
    pub fn flush_suppressed(&self) {
        let summary = self.inner.refusals.lock().ok().and_then(|mut l| l.take_summary());
        if let Some(s) = summary {
            self.record(Event::now("denials_suppressed", &s));
        }
    }

    /// Writes a final checkpoint, then gives the sinks up to `drain` to ship everything.
    pub async fn shutdown(&self, drain: Duration) {
        self.flush_suppressed();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let head = if self.inner.tx.send(Msg::Shutdown(tx)).is_ok() {
            tokio::task::spawn_blocking(move || rx.recv().ok())
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let thread = self.inner.writer.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(head) = head {
            let deadline = Instant::now() + drain;
            while self.inner.acks.min().is_some_and(|a| a < head) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Ok(mut sinks) = self.inner.sinks.lock() {
            for (_, s) in sinks.drain() {
                s.stop();
            }
        }
    }

    /// Starts the audit of one exchange: resolves the key's capture mode and captures request
    /// content as the mode says.
    pub fn exchange(
        &self,
        snapshot: &Snapshot,
        key: &KeyEntry,
        request_id: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> ExchangeAudit {
        let audit_cfg = snapshot.audit.as_ref();
        let capture = key
            .capture
            .unwrap_or_else(|| audit_cfg.map(|a| a.capture).unwrap_or_default());
        let max_bytes = audit_cfg
            .and_then(|a| a.capture_max_bytes)
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(DEFAULT_CAPTURE_MAX_BYTES);
        let request = match capture {
            CaptureMode::None => None,
            CaptureMode::Metadata => Some(metadata(headers, body)),
            CaptureMode::Full => {
                let mut m = metadata(headers, body);
                let (prompt, truncated) = cut(body, max_bytes);
                m["prompt"] = prompt.into();
                m["prompt_truncated"] = truncated.into();
                Some(m)
            }
        };
        ExchangeAudit {
            audit: self.clone(),
            identity: Identity {
                request_id: request_id.to_owned(),
                key_id: Some(key.id.clone()),
                user: key.user.clone(),
                team: key.team.clone(),
                session_id: session_id(headers),
            },
            capture,
            max_bytes,
            request,
            response: Vec::new(),
            sse: None,
            streamed: String::new(),
        }
    }

    /// Records a denial.
    pub fn denial(
        &self,
        denial: &Denial,
        request_id: &str,
        key: Option<&KeyEntry>,
        session_id: Option<&str>,
    ) {
        self.refusal(
            denial.reason(),
            denial.status(),
            &denial.message(),
            request_id,
            key,
            session_id,
        );
    }

    /// Records a refusal (a `denial` record). Values the client chose are clipped; refusals
    /// without an authenticated key pass the rate limit first (the rest are counted in the
    /// next `denials_suppressed` record).
    pub fn refusal(
        &self,
        reason: &'static str,
        status: u16,
        message: &str,
        request_id: &str,
        key: Option<&KeyEntry>,
        session_id: Option<&str>,
    ) {
        let time = jiff::Timestamp::now();
        if key.is_none() {
            let admitted = self
                .inner
                .refusals
                .lock()
                .map_or(true, |mut l| l.admit(Instant::now(), time, reason));
            if !admitted {
                return;
            }
        }
        let body = events::Denial {
            identity: Identity {
                request_id: request_id.to_owned(),
                key_id: key.map(|k| k.id.clone()),
                user: key.and_then(|k| k.user.clone()),
                team: key.and_then(|k| k.team.clone()),
                session_id: session_id.map(|s| clip(s, FIELD_MAX_CHARS)),
            },
            reason,
            status,
            message: clip(message, MESSAGE_MAX_CHARS),
        };
        let mut event = Event::now("denial", &body);
        event.time = time;
        self.record(event);
    }

    /// Records an MCP `tools/call`, allowed or refused (its client-chosen tool name clipped).
    pub fn mcp_tool_call(&self, mut body: events::McpToolCall) {
        body.tool = clip(&body.tool, FIELD_MAX_CHARS);
        body.identity.session_id = body.identity.session_id.map(|s| clip(&s, FIELD_MAX_CHARS));
        self.record(Event::now("mcp_tool_call", &body));
    }

    /// Records a policy reload (applied or rejected) and applies its audit settings.
    pub fn policy_reload(&self, result: &'static str, error: Option<String>, snapshot: Option<&Snapshot>) {
        let body = events::PolicyReload {
            result,
            revision: snapshot.map(|s| s.revision.clone()),
            error,
            keys: snapshot.map_or(0, |s| s.key_count() as u64),
        };
        self.record(Event::now("policy_reload", &body));
        if result == "applied" {
            self.configure(snapshot.and_then(|s| s.audit.as_ref()));
        }
    }

    /// Records a budget threshold crossed by a settlement.
    pub fn budget_threshold(&self, body: events::BudgetThreshold) {
        self.record(Event::now("budget_threshold", &body));
    }
}

/// The client's Claude Code session id, when sent (clipped to [`FIELD_MAX_CHARS`]).
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    // Claude Code's, then Codex CLI's (`session-id`, one per conversation; e2e/captures).
    // Gemini CLI sends none: its requests are attributed by key only.
    SESSION_HEADERS
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(|s| clip(s, FIELD_MAX_CHARS))
}

/// The headers an agent names its session in, in order of preference.
const SESSION_HEADERS: &[&str] = &["x-claude-code-session-id", "session-id", "session_id"];

/// Most tool names listed in a record's metadata (`tools_count` says how many were sent).
const MAX_TOOL_NAMES: usize = 512;

/// Request metadata: sizes, tool names, stream flag, and headers of interest.
fn metadata(headers: &HeaderMap, body: &Bytes) -> Value {
    #[derive(serde::Deserialize)]
    struct Tool {
        #[serde(default)]
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Req {
        #[serde(default)]
        tools: Vec<Tool>,
        #[serde(default)]
        messages: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        stream: bool,
        #[serde(default)]
        max_tokens: Option<u64>,
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(|v| clip(v, FIELD_MAX_CHARS))
    };
    let req: Option<Req> = serde_json::from_slice(body).ok();
    json!({
        "request_bytes": body.len() as u64,
        "messages": req.as_ref().map(|r| r.messages.len() as u64),
        "tools": req.as_ref().map(|r| {
            r.tools
                .iter()
                .take(MAX_TOOL_NAMES)
                .map(|t| clip(&t.name, FIELD_MAX_CHARS))
                .collect::<Vec<_>>()
        }),
        "tools_count": req.as_ref().map(|r| r.tools.len() as u64),
        "stream": req.as_ref().map(|r| r.stream),
        "max_tokens": req.as_ref().and_then(|r| r.max_tokens),
        "anthropic_beta": header("anthropic-beta"),
        "user_agent": header("user-agent"),
    })
}

/// The first `max` bytes of `b` as text (cut at a character boundary), and whether it was cut.
fn cut(b: &[u8], max: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(b);
    if text.len() <= max {
        return (text.into_owned(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// The text of a JSON message's content blocks (text, and tool inputs as JSON); the raw
/// body when it does not parse.
fn completion_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        if let Some(blocks) = v["content"].as_array() {
            return blocks
                .iter()
                .filter_map(|b| {
                    b["text"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| b.get("input").map(|i| i.to_string()))
                })
                .collect::<Vec<_>>()
                .join("");
        }
    }
    text.into_owned()
}

/// Largest JSON response kept aside for capture.
const JSON_CAPTURE_LIMIT: usize = 4 << 20;

/// The audit of one exchange in flight: identity, capture mode and captured content.
pub struct ExchangeAudit {
    audit: Audit,
    identity: Identity,
    capture: CaptureMode,
    max_bytes: usize,
    request: Option<Value>,
    /// A JSON body, or the unfinished line of an SSE stream.
    response: Vec<u8>,
    /// Whether the response is an SSE stream (known from its first bytes).
    sse: Option<bool>,
    /// Text and tool-input deltas read from an SSE stream so far.
    streamed: String,
}

/// What the accounting knows when an exchange ends.
pub struct ExchangeEnd<'a> {
    /// `messages` or `count_tokens`.
    pub endpoint: &'static str,
    /// Requested model.
    pub model: &'a str,
    /// Upstream model id.
    pub upstream_model: &'a str,
    /// Provider id.
    pub provider: &'a str,
    /// Upstream status.
    pub status: u16,
    /// How the body ended.
    pub outcome: &'static str,
    /// Whether the response was complete.
    pub complete: bool,
    /// Usage.
    pub usage: &'a Usage,
    /// Whether the usage is estimated (no final usage was read).
    pub usage_estimated: bool,
    /// Cost in micro-USD.
    pub cost_micro_usd: u64,
    /// Total latency.
    pub latency: Duration,
    /// Time to first byte.
    pub ttfb: Option<Duration>,
}

impl ExchangeAudit {
    /// Reads response bytes under `full` capture: the text deltas of an SSE stream as they
    /// pass (bounded by the capture limit), or a JSON body kept aside (bounded).
    pub fn observe_response(&mut self, data: &[u8]) {
        if self.capture != CaptureMode::Full || data.is_empty() {
            return;
        }
        let sse = *self.sse.get_or_insert_with(|| {
            data.starts_with(b"event:") || data.starts_with(b"data:") || data.starts_with(b":")
        });
        if !sse {
            let room = JSON_CAPTURE_LIMIT.saturating_sub(self.response.len());
            self.response.extend_from_slice(&data[..data.len().min(room)]);
            return;
        }
        self.response.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.response[start..].iter().position(|&b| b == b'\n') {
            let line = &self.response[start..start + nl];
            start += nl + 1;
            if self.streamed.len() > self.max_bytes {
                continue;
            }
            let Some(payload) = line.strip_prefix(b"data:") else {
                continue;
            };
            if let Ok(v) = serde_json::from_slice::<Value>(payload) {
                let d = &v["delta"];
                if let Some(t) = d["text"].as_str().or(d["partial_json"].as_str()) {
                    self.streamed.push_str(t);
                }
            }
        }
        self.response.drain(..start);
        if self.response.len() > JSON_CAPTURE_LIMIT {
            self.response.clear();
        }
    }

    /// Records the `model_request` record.
    pub fn finish(self, end: ExchangeEnd<'_>) {
        let content = match (self.capture, self.request) {
            (CaptureMode::Full, Some(mut m)) => {
                let text = if self.sse == Some(true) {
                    self.streamed
                } else {
                    completion_text(&self.response)
                };
                let (completion, truncated) = cut(text.as_bytes(), self.max_bytes);
                m["completion"] = completion.into();
                m["completion_truncated"] = truncated.into();
                Some(m)
            }
            (_, r) => r,
        };
        let u = end.usage;
        let body = events::ModelRequest {
            identity: self.identity,
            endpoint: end.endpoint,
            model: end.model.to_owned(),
            upstream_model: end.upstream_model.to_owned(),
            provider: end.provider.to_owned(),
            status: end.status,
            outcome: end.outcome,
            complete: end.complete,
            tokens: Tokens {
                input: u.input_tokens,
                output: u.output_tokens,
                cache_write_5m: u.cache_write_5m_tokens,
                cache_write_1h: u.cache_write_1h_tokens,
                cache_read: u.cache_read_tokens,
            },
            usage_estimated: end.usage_estimated,
            cost_micro_usd: end.cost_micro_usd,
            latency_ms: end.latency.as_millis() as u64,
            ttfb_ms: end.ttfb.map(|d| d.as_millis() as u64),
            capture: match self.capture {
                CaptureMode::None => "none",
                CaptureMode::Metadata => "metadata",
                CaptureMode::Full => "full",
            },
            content,
        };
        self.audit.record(Event::now("model_request", &body));
    }

    /// The audit handle, e.g. for threshold records of the same request.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Who made the request.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}
