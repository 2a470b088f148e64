//! The Anthropic-format request path: classify, authenticate, authorize the model, route,
//! forward (with fallback to later targets), and stream the answer back metered.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use tracing::Instrument;
use tracing::field::Empty;

use super::accounting::{Completion, Outcome};
use super::admission::{Admitted, Ledgers, admit};
use super::metered::{MeteredBody, Tap};
use crate::anthropic::{error::denial_body, request};
use crate::audit::{self, Audit, ExchangeAudit, ExchangeEnd};
use crate::auth::authenticate;
use crate::denial::Denial;
use crate::ledger::Settlement;
use crate::limits::history::{OptimisticSlot, OutputHistory};
use crate::limits::plan::{
    DEFAULT_MAX_TOKENS, DEFAULT_OUTPUT_CAP, Estimate, RequestKind, estimate, output_estimate, plan, price_for,
};
use crate::metrics::{Metrics, RequestLabels};
use crate::openai;
use crate::policy::document::ProviderKind;
use crate::policy::{KeyEntry, PolicyStore, Snapshot, Target};
use crate::providers::{ApiFormat, Call, CallError, Operation, UpstreamBody};
use crate::routing::{Candidate, Health, attempt_order};
use crate::telemetry;
use crate::upstream::{HttpClient, response_headers};
use crate::usage::RequestSize;

pub use crate::body::{BoxedBody, ProxyBody, StreamError, boxed};

/// Default request body limit: Anthropic's own (32 MB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Shared state of the proxy listener.
pub struct Gateway {
    store: Arc<PolicyStore>,
    client: HttpClient,
    metrics: Arc<Metrics>,
    ledgers: Ledgers,
    max_body_bytes: usize,
    id_prefix: u64,
    next_id: AtomicU64,
    mcp: crate::mcp::McpGateway,
    audit: Option<Audit>,
    /// What keys and models recently produced: the budget estimate's output part.
    history: Arc<OutputHistory>,
    /// Passive health and retry budgets of the providers (survive policy reloads).
    health: Health,
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Probe,
    /// A model call: its API format, what it is charged as, and the model when the path
    /// names it (Gemini).
    Call {
        format: ApiFormat,
        kind: RequestKind,
        model: Option<String>,
    },
    Models,
    Model(String),
    /// The OpenAI API's model list.
    OpenAiModels,
    Mcp,
    NotFound,
}

/// Maps method and path (query ignored) to an endpoint: the Anthropic API (with or without
/// the `/anthropic` prefix), the Gemini API (`/gemini/v1beta/models/{model}:{method}`), the MCP
/// gateway.
fn classify(method: &Method, path: &str) -> Endpoint {
    if path.starts_with("/gemini/") || path.starts_with("/v1beta/") {
        return match (method, crate::gemini::request::parse_path(path)) {
            (&Method::POST, Some((model, m))) => Endpoint::Call {
                format: ApiFormat::Gemini(m),
                kind: if m.generates() {
                    RequestKind::Messages
                } else {
                    RequestKind::CountTokens
                },
                model: Some(model),
            },
            _ => Endpoint::NotFound,
        };
    }
    let openai = |format| Endpoint::Call {
        format,
        kind: RequestKind::Messages,
        model: None,
    };
    match (method, path.trim_end_matches('/')) {
        (&Method::POST, "/openai/v1/responses" | "/v1/responses") => {
            return openai(ApiFormat::OpenAiResponses);
        }
        (&Method::POST, "/openai/v1/chat/completions" | "/v1/chat/completions") => {
            return openai(ApiFormat::OpenAiChat);
        }
        (&Method::GET, "/openai/v1/models") => return Endpoint::OpenAiModels,
        _ => {}
    }
    let path = path
        .strip_prefix("/anthropic")
        .filter(|p| p.is_empty() || p.starts_with('/'))
        .unwrap_or(path);
    let path = path.trim_end_matches('/');
    let anthropic = |kind| Endpoint::Call {
        format: ApiFormat::Anthropic,
        kind,
        model: None,
    };
    match (method, path) {
        (&Method::HEAD | &Method::GET, "" | "/api/hello") => Endpoint::Probe,
        (&Method::POST, "/v1/messages") => anthropic(RequestKind::Messages),
        (&Method::POST, "/v1/messages/count_tokens") => anthropic(RequestKind::CountTokens),
        (&Method::GET, "/v1/models") => Endpoint::Models,
        (_, "/mcp") => Endpoint::Mcp,
        (&Method::GET, p) => match p.strip_prefix("/v1/models/") {
            Some(id) if !id.is_empty() && !id.contains('/') => Endpoint::Model(id.to_owned()),
            _ => Endpoint::NotFound,
        },
        _ => Endpoint::NotFound,
    }
}

impl Endpoint {
    /// The API format its answers (refusals included) are in.
    fn format(&self) -> ApiFormat {
        match self {
            Endpoint::Call { format, .. } => *format,
            Endpoint::OpenAiModels => ApiFormat::OpenAiResponses,
            _ => ApiFormat::Anthropic,
        }
    }
}

/// The API format of a path the gateway does not serve, from its prefix: a 404 on
/// `/openai/...` or `/gemini/...` comes in that client's error format.
fn format_of_path(path: &str) -> ApiFormat {
    if path.starts_with("/openai/") {
        ApiFormat::OpenAiResponses
    } else if path.starts_with("/gemini/") || path.starts_with("/v1beta/") {
        ApiFormat::Gemini(crate::gemini::Method::Generate)
    } else {
        ApiFormat::Anthropic
    }
}

/// Per-request facts gathered along the way, for the denial log and metrics.
struct Seen {
    key: Option<Arc<KeyEntry>>,
    session_id: Option<String>,
    /// The client's API format: refusals are written in it.
    format: ApiFormat,
    /// The request's span, once the key is known.
    otel: telemetry::CallSpan,
}

impl Gateway {
    /// Creates the gateway state.
    pub fn new(
        store: Arc<PolicyStore>,
        client: HttpClient,
        metrics: Arc<Metrics>,
        ledgers: Ledgers,
        max_body_bytes: usize,
    ) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let id_prefix = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            mcp: crate::mcp::McpGateway::new(store.clone(), client.clone(), metrics.clone()),
            store,
            client,
            metrics,
            ledgers,
            max_body_bytes,
            id_prefix,
            next_id: AtomicU64::new(0),
            audit: None,
            history: Arc::new(OutputHistory::new()),
            health: Health::default(),
        }
    }

    /// Records every exchange, denial and budget threshold in `audit` (when auditing).
    pub fn with_audit(mut self, audit: Option<Audit>) -> Self {
        self.mcp.set_audit(audit.clone());
        self.audit = audit;
        self
    }

    fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("req_tg_{:016x}{:08x}", self.id_prefix, n)
    }

    /// Serves one request; never fails (errors become Anthropic error responses).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
        let request_id = self.request_id();
        let endpoint = classify(req.method(), req.uri().path());
        let format = match endpoint {
            Endpoint::NotFound => format_of_path(req.uri().path()),
            _ => endpoint.format(),
        };
        if endpoint == Endpoint::Probe {
            return Ok(empty(StatusCode::OK));
        }
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            key_id = Empty,
            team = Empty,
            model = Empty,
            session_id = Empty,
        );
        let session_id = audit::session_id(req.headers());
        if let Some(s) = &session_id {
            span.record("session_id", s.as_str());
        }
        let _in_flight = InFlight::new(&self.metrics);
        let mut seen = Seen {
            key: None,
            session_id,
            format,
            otel: telemetry::CallSpan::default(),
        };
        let result = self
            .serve(req, endpoint, &request_id, &mut seen, &span)
            .instrument(span.clone())
            .await;
        // OpenTelemetry hook: a refusal ends the span (an answer ends it in
        // `Completion::finish`).
        let otel = std::mem::take(&mut seen.otel);
        Ok(match result {
            Ok(resp) => resp,
            Err(denial) => {
                otel.refuse(&denial);
                self.refuse(&denial, &request_id, &seen, &span)
            }
        })
    }

    fn refuse(
        &self,
        denial: &Denial,
        request_id: &str,
        seen: &Seen,
        span: &tracing::Span,
    ) -> Response<ProxyBody> {
        let (key_id, team) = match &seen.key {
            Some(k) => (k.id.as_str(), k.team.as_deref().unwrap_or("")),
            None => ("", ""),
        };
        self.metrics.denial(denial.reason(), key_id, team);
        tracing::warn!(parent: span, reason = denial.reason(), status = denial.status(), detail = %denial.message(), "request denied");
        if let Some(a) = &self.audit {
            a.denial(
                denial,
                request_id,
                seen.key.as_deref(),
                seen.session_id.as_deref(),
            );
        }
        let (status, body, headers) = refusal(seen.format, denial, request_id);
        let mut resp = Response::new(Either::Left(Full::new(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("request-id", v);
        }
        // Tell the SDK not to retry what retrying cannot fix.
        if matches!(status.as_u16(), 400 | 402 | 403 | 404 | 413) {
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        for (name, value) in headers {
            if let (Ok(n), Ok(v)) = (http::HeaderName::try_from(name), HeaderValue::from_str(&value)) {
                h.insert(n, v);
            }
        }
        resp
    }

    /// Authenticates the key and serves the endpoint.
    async fn serve(
        &self,
        req: Request<Incoming>,
        endpoint: Endpoint,
        request_id: &str,
        seen: &mut Seen,
        span: &tracing::Span,
    ) -> Result<Response<ProxyBody>, Denial> {
        if endpoint == Endpoint::Mcp {
            return Ok(self.mcp.handle(req, request_id, span).await);
        }
        let path = req.uri().path().to_owned();
        let snapshot = self.store.snapshot().ok_or(Denial::NoPolicy)?;
        if endpoint == Endpoint::NotFound {
            return Err(Denial::NotFound { path });
        }
        let mut req = req;
        if let ApiFormat::Gemini(_) = endpoint.format() {
            gemini_key_into_header(&mut req)?;
        }
        let key = authenticate(&snapshot, req.headers(), jiff::Timestamp::now())?;
        span.record("key_id", key.id.as_str());
        if let Some(team) = &key.team {
            span.record("team", team.as_str());
        }
        seen.key = Some(key.clone());
        // OpenTelemetry hook: a model request's span, started once the key is known (a client
        // without a valid key can neither add spans nor steer sampling with a `traceparent`),
        // and carried in the request's extensions.
        if let Endpoint::Call { format, kind, .. } = &endpoint {
            let otel = telemetry::CallSpan::start(
                req.headers(),
                *format,
                *kind,
                request_id,
                seen.session_id.as_deref(),
            );
            otel.key(&key);
            req.extensions_mut().insert(otel.clone());
            seen.otel = otel;
        }
        match endpoint {
            Endpoint::Models => Ok(json_response(models_page(
                &snapshot.models_for(&key, ApiFormat::Anthropic),
            ))),
            Endpoint::OpenAiModels => Ok(json_response(openai_models_page(
                &snapshot.models_for(&key, ApiFormat::OpenAiResponses),
            ))),
            Endpoint::Model(id) => {
                if snapshot
                    .targets_for(&key, &id, ApiFormat::Anthropic)
                    .is_some_and(|t| !t.is_empty())
                {
                    Ok(json_response(model_object(&id)))
                } else {
                    Err(Denial::UnknownModel { model: id })
                }
            }
            Endpoint::Call { format, kind, model } => {
                let call = ClientCall { format, kind, model };
                self.forward(req, snapshot, key, request_id, call, span).await
            }
            Endpoint::Probe | Endpoint::Mcp | Endpoint::NotFound => Err(Denial::NotFound { path }),
        }
    }

    /// Forwards a Messages or count_tokens request, in phases: read it, authorize its model,
    /// admit it against budgets and rate limits, route it (the order of its targets), dispatch
    /// it (falling back within the retry budgets), and meter the answer; the exchange is
    /// accounted when the metered body ends ([`Completion`]).
    async fn forward(
        &self,
        req: Request<Incoming>,
        snapshot: Arc<Snapshot>,
        key: Arc<KeyEntry>,
        request_id: &str,
        call: ClientCall,
        span: &tracing::Span,
    ) -> Result<Response<ProxyBody>, Denial> {
        let request = self.read_request(req, &snapshot, call, &key, span).await?;
        // OpenTelemetry hook: the requested model, then the budget decision.
        let otel = telemetry::CallSpan::of(&request.parts.extensions);
        otel.requested(&request.model, request.max_tokens, request.stream);
        let permitted = permitted_targets(&snapshot, &key, &request.model, request.format)?;
        let mut pending = self
            .admit(&snapshot, &key, &request, &permitted, request_id, span)
            .await?;
        otel.admitted();
        let order = self.route(permitted);
        let client_key = crate::auth::presented_key_of(&snapshot, &request.parts.headers, &key);
        match self.dispatch(&request, &order, client_key, &mut pending).await {
            Ok(answer) => Ok(self
                .meter(answer, request, pending, &snapshot, &key, request_id, span)
                .await),
            Err(denial) => {
                // No answer came: nothing was used.
                pending.release();
                Err(denial)
            }
        }
    }

    /// Reads and checks the request in its API format: headers, body (bounded), the key's
    /// tool policy, the fields the gateway needs, the output ceiling.
    async fn read_request(
        &self,
        req: Request<Incoming>,
        snapshot: &Snapshot,
        call: ClientCall,
        key: &Arc<KeyEntry>,
        span: &tracing::Span,
    ) -> Result<ModelRequest, Denial> {
        let invalid = |detail: String| Denial::InvalidRequest { detail };
        let (parts, body) = req.into_parts();
        match call.format {
            ApiFormat::Anthropic => request::check_headers(&parts.headers).map_err(invalid)?,
            _ => request::check_content_type(&parts.headers).map_err(invalid)?,
        }
        let body = read_body(body, self.max_body_bytes).await?;
        let (body, parsed, tool_guard) = match call.format {
            ApiFormat::Anthropic => {
                let (body, guard) = crate::anthropic::tools::filter_request(key, body)?;
                let info = request::inspect(&body).map_err(invalid)?;
                let parsed = Parsed {
                    model: info.model.clone(),
                    stream: info.stream,
                    max_tokens: info.max_tokens,
                    splice: Splice::Anthropic(info),
                };
                (body, parsed, guard)
            }
            ApiFormat::OpenAiResponses | ApiFormat::OpenAiChat => {
                let api = if call.format == ApiFormat::OpenAiChat {
                    openai::Api::Chat
                } else {
                    openai::Api::Responses
                };
                let body = openai::tools::filter_request(key, api, body)?;
                let mut info = openai::request::inspect(api, &body).map_err(invalid)?;
                // Chat streams state usage only when asked: ask, so the answer can be metered.
                let body = if api == openai::Api::Chat && info.stream {
                    let asked = openai::request::ensure_usage_in_stream(&body);
                    if asked != body {
                        info = openai::request::inspect(api, &asked).map_err(invalid)?;
                    }
                    asked
                } else {
                    body
                };
                let parsed = Parsed {
                    model: info.model.clone(),
                    stream: info.stream,
                    max_tokens: info.output_ceiling(),
                    splice: Splice::OpenAi(info),
                };
                (body, parsed, None)
            }
            ApiFormat::Gemini(method) => {
                let body = crate::gemini::tools::filter_request(key, body)?;
                let info = crate::gemini::request::inspect(method, &body).map_err(invalid)?;
                let parsed = Parsed {
                    model: call.model.clone().unwrap_or_default(),
                    stream: info.stream,
                    max_tokens: info.output_bound(None),
                    splice: Splice::Path,
                };
                (body, parsed, None)
            }
        };
        span.record("model", parsed.model.as_str());
        let ceiling = snapshot.output_ceiling();
        if let Some(max) = parsed.max_tokens.filter(|m| *m > ceiling) {
            return Err(Denial::InvalidRequest {
                detail: format!(
                    "max_tokens: {max} is more than {ceiling}, the largest output limit of any model this gateway knows"
                ),
            });
        }
        let size = RequestSize {
            input_tokens: (body.len() as u64).div_ceil(3),
            max_output_tokens: parsed.max_tokens.unwrap_or(ceiling).min(ceiling),
        };
        Ok(ModelRequest {
            format: call.format,
            parts,
            body,
            model: parsed.model,
            stream: parsed.stream,
            max_tokens: parsed.max_tokens,
            splice: parsed.splice,
            kind: call.kind,
            tool_guard,
            size,
        })
    }

    /// Admits the request against its budgets and rate limits (reserving its estimate), and
    /// opens its audit record.
    async fn admit(
        &self,
        snapshot: &Arc<Snapshot>,
        key: &Arc<KeyEntry>,
        request: &ModelRequest,
        permitted: &[Target],
        request_id: &str,
        span: &tracing::Span,
    ) -> Result<Pending, Denial> {
        let (estimate, money_estimate, slot) = match request.kind {
            RequestKind::Messages => self.estimate(snapshot, key, permitted, request),
            RequestKind::CountTokens => (Estimate::default(), 0, None),
        };
        let mut plan = plan(
            snapshot,
            key,
            request_id,
            request.kind,
            estimate.cost_micro_usd,
            estimate.input_tokens,
            jiff::Timestamp::now(),
        );
        plan.money_estimate_micro_usd = money_estimate;
        let admitted = admit(
            &self.ledgers,
            plan,
            snapshot.limits.on_ledger_unavailable,
            &self.metrics,
            span,
        )
        .await?
        .map(|a| a.with_audit(self.audit.as_ref(), request_id, key));
        Ok(Pending {
            admitted,
            exchange: (self.audit.as_ref())
                .map(|a| a.exchange(snapshot, key, request_id, &request.parts.headers, &request.body)),
            endpoint: request.endpoint(),
            model: request.model.clone(),
            upstream: None,
            // The provider may bill what it generated for a request abandoned after it was
            // sent: the whole reservation is charged, never only the input.
            abandon: Settlement {
                actual_micro_usd: estimate.cost_micro_usd,
                actual_tokens: estimate.input_tokens + estimate.output_tokens,
            },
            abandon_usage: crate::usage::Usage {
                input_tokens: estimate.input_tokens,
                output_tokens: estimate.output_tokens,
                ..Default::default()
            },
            slot,
            span: span.clone(),
            sent: Instant::now(),
        })
    }

    /// The order to try the permitted targets in: by priority, weighted within a priority,
    /// ejected providers last ([`crate::routing`]).
    fn route(&self, permitted: Vec<Target>) -> Vec<Target> {
        let now = Instant::now();
        let candidates: Vec<Candidate> = permitted
            .iter()
            .map(|t| Candidate {
                priority: t.priority,
                weight: t.weight,
                ejected: self.health.provider(&t.provider.id).ejected(now),
            })
            .collect();
        let mut slots: Vec<Option<Target>> = permitted.into_iter().map(Some).collect();
        attempt_order(&candidates)
            .into_iter()
            .filter_map(|i| slots.get_mut(i).and_then(Option::take))
            .collect()
    }

    /// Sends the request to its targets in order until one answers usefully: a connect
    /// failure, a timeout, a 429 or a 5xx moves on to the next target, while the failing
    /// provider's retry budget allows; otherwise that answer (or failure) is the client's.
    async fn dispatch(
        &self,
        request: &ModelRequest,
        order: &[Target],
        client_key: Option<&str>,
        pending: &mut Pending,
    ) -> Result<Answer, Denial> {
        let mut last = Denial::UnknownModel {
            model: request.model.clone(),
        };
        for (i, target) in order.iter().enumerate() {
            let provider = &target.provider;
            let health = self.health.provider(&provider.id);
            let upstream_model = target.model.clone().unwrap_or_else(|| request.model.clone());
            let body = request.body_for(&upstream_model);
            pending.upstream = Some((provider.id.clone(), upstream_model.clone()));
            health.sent(provider.retry_budget);
            let result = self
                .send(target, request, &upstream_model, client_key, body)
                .await;
            if let Err(denial @ Denial::InvalidRequest { .. }) = result {
                // The client's request, not the provider: final, and no failure of it.
                return Err(denial);
            }
            let now = Instant::now();
            let failed = match &result {
                Ok((resp, _)) => falls_back(provider.kind, resp.status()),
                Err(_) => true,
            };
            if !failed {
                health.succeeded();
            } else if health.failed(now) {
                self.metrics.ejected(&provider.id);
                tracing::warn!(provider = %provider.id, "provider ejected after consecutive failures: tried last for a while");
            }
            let may_fall_back = failed && i + 1 < order.len() && {
                let allowed = health.may_fall_back(provider.retry_budget, now);
                self.metrics.fallback(&provider.id, allowed);
                if !allowed {
                    tracing::warn!(provider = %provider.id, "retry budget spent: no fallback");
                }
                allowed
            };
            match result {
                Ok((resp, _)) if may_fall_back => {
                    tracing::warn!(provider = %provider.id, status = resp.status().as_u16(), "falling back to the next target");
                    last = Denial::ProviderUnavailable {
                        provider: provider.id.clone(),
                        detail: format!("status {}", resp.status()),
                    };
                }
                Ok((resp, sent)) => {
                    return Ok(Answer {
                        resp,
                        target: target.clone(),
                        upstream_model,
                        sent,
                    });
                }
                Err(denial) => {
                    tracing::warn!(provider = %provider.id, reason = denial.reason(), "upstream attempt failed");
                    if !may_fall_back {
                        return Err(denial);
                    }
                    last = denial;
                }
            }
        }
        Err(last)
    }

    /// The client's response: the answer's body metered (and guarded by the key's tool
    /// policy); the exchange is accounted when it ends.
    #[allow(clippy::too_many_arguments)]
    async fn meter(
        &self,
        answer: Answer,
        request: ModelRequest,
        mut pending: Pending,
        snapshot: &Arc<Snapshot>,
        key: &KeyEntry,
        request_id: &str,
        span: &tracing::Span,
    ) -> Response<ProxyBody> {
        let messages = request.kind == RequestKind::Messages;
        let provider = &answer.target.provider;
        let labels = RequestLabels {
            key_id: key.id.clone(),
            team: key.team.clone().unwrap_or_default(),
            model: snapshot.model_label(&request.model).to_owned(),
            provider: provider.id.clone(),
        };
        let (admitted, audit) = pending.take();
        let completion = Completion {
            metrics: self.metrics.clone(),
            labels,
            requested: request.model.clone(),
            snapshot: snapshot.clone(),
            upstream_model: answer.upstream_model,
            provider: provider.clone(),
            status: answer.resp.status().as_u16(),
            sent: answer.sent,
            span: span.clone(),
            admitted,
            audit,
            endpoint: request.endpoint(),
            request: request.size,
            history: messages.then(|| (self.history.clone(), key.id.clone())),
            slot: pending.slot.take(),
            otel: telemetry::CallSpan::of(&request.parts.extensions),
        };
        let idle = Duration::from_millis(provider.timeouts.stream_idle_ms);
        let stamp = (provider.kind != ProviderKind::Tollgate).then_some(request_id);
        let resp = respond(answer.resp, completion, request.format, messages, idle, stamp);
        match request.tool_guard {
            Some(guard) if messages => guard.guard(resp).await,
            _ => resp,
        }
    }

    /// The budget estimate of a Messages request, priced at the dearest model its targets
    /// serve (any of them may answer): what to reserve, the estimate a refusal is judged by
    /// (see [`crate::limits::plan::Plan::money_estimate_micro_usd`]), and the key's optimistic
    /// slot when the reservation is the learned estimate.
    fn estimate(
        &self,
        snapshot: &Snapshot,
        key: &KeyEntry,
        targets: &[Target],
        request: &ModelRequest,
    ) -> (Estimate, u64, Option<OptimisticSlot>) {
        let body_len = request.body.len();
        let cap = snapshot
            .limits
            .estimate_output_tokens_cap
            .unwrap_or(DEFAULT_OUTPUT_CAP);
        let output = output_estimate(request.max_tokens, cap, None);
        let (model, price, worst) = targets
            .iter()
            .map(|t| {
                let model = t.model.as_deref().unwrap_or(&request.model);
                let (price, _) = price_for(&snapshot.prices, t.provider.pricing(), model, &request.model);
                (model, price, estimate(price, body_len, output))
            })
            .max_by_key(|(_, _, e)| e.cost_micro_usd)
            .unwrap_or((&request.model, None, Estimate::default()));
        let max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let typical = self.history.typical_output(&key.id, model, max_tokens);
        let learned = estimate(price, body_len, output_estimate(request.max_tokens, cap, typical));
        if learned.cost_micro_usd >= worst.cost_micro_usd {
            return (worst, worst.cost_micro_usd, None);
        }
        match self.history.optimistic_slot(&key.id) {
            Some(slot) => (learned, learned.cost_micro_usd, Some(slot)),
            None => (worst, learned.cost_micro_usd, None),
        }
    }

    /// One attempt: builds the provider's request (which may fetch a credential) and waits
    /// for its answer's headers, both within the provider's response-headers timeout.
    async fn send(
        &self,
        target: &Target,
        request: &ModelRequest,
        model: &str,
        client_key: Option<&str>,
        body: Bytes,
    ) -> Result<(Response<UpstreamBody>, Instant), Denial> {
        let provider = &target.provider;
        let unavailable = |detail: String| Denial::ProviderUnavailable {
            provider: provider.id.clone(),
            detail,
        };
        let op = request.op();
        let call = Call {
            format: request.format,
            op,
            model,
            path_and_query: request.path_and_query(),
            headers: &request.parts.headers,
            client_key,
            body,
        };
        let attempt = async {
            let mut upstream = provider
                .wire
                .request(&self.client, call)
                .await
                .map_err(|e| match e {
                    CallError::Request(detail) => Denial::InvalidRequest { detail },
                    CallError::Provider(detail) => unavailable(detail),
                })?;
            // OpenTelemetry hook: the provider request carries our span's traceparent.
            telemetry::CallSpan::of(&request.parts.extensions).inject(upstream.headers_mut());
            let sent = Instant::now();
            let resp = self
                .client
                .request(upstream)
                .await
                .map_err(|e| unavailable(crate::upstream::error_chain(&e)))?;
            Ok((resp, sent))
        };
        let limit = Duration::from_millis(provider.timeouts.response_headers_ms);
        let (resp, sent) = match tokio::time::timeout(limit, attempt).await {
            Err(_) => {
                return Err(Denial::UpstreamTimeout {
                    provider: provider.id.clone(),
                });
            }
            Ok(result) => result?,
        };
        let idle = Duration::from_millis(provider.timeouts.stream_idle_ms);
        Ok((provider.wire.response(op, resp, idle).await, sent))
    }
}

/// What a client call is, from its path.
struct ClientCall {
    format: ApiFormat,
    kind: RequestKind,
    /// The model, when the path names it (Gemini).
    model: Option<String>,
}

/// What the gateway read from a request body.
struct Parsed {
    model: String,
    stream: bool,
    max_tokens: Option<u64>,
    splice: Splice,
}

/// Where the model is, for sending another one upstream.
enum Splice {
    /// In an Anthropic body.
    Anthropic(request::RequestInfo),
    /// In an OpenAI body.
    OpenAi(openai::request::Info),
    /// In the path (Gemini): the body carries none.
    Path,
}

/// A model request (any API format), read and checked.
struct ModelRequest {
    /// The API the client speaks.
    format: ApiFormat,
    parts: http::request::Parts,
    body: Bytes,
    /// The requested model.
    model: String,
    stream: bool,
    /// The most output tokens the answer can bill, when the request says.
    max_tokens: Option<u64>,
    splice: Splice,
    kind: RequestKind,
    tool_guard: Option<crate::anthropic::tools::ToolGuard>,
    size: RequestSize,
}

impl ModelRequest {
    fn op(&self) -> Operation {
        match self.kind {
            RequestKind::Messages => Operation::Messages { stream: self.stream },
            RequestKind::CountTokens => Operation::CountTokens,
        }
    }

    /// The endpoint as audit records and logs name it.
    fn endpoint(&self) -> &'static str {
        match (self.format, self.kind) {
            (_, RequestKind::CountTokens) => "count_tokens",
            (ApiFormat::Anthropic, RequestKind::Messages) => "messages",
            (ApiFormat::OpenAiResponses, RequestKind::Messages) => "responses",
            (ApiFormat::OpenAiChat, RequestKind::Messages) => "chat_completions",
            (ApiFormat::Gemini(_), RequestKind::Messages) => "generate_content",
        }
    }

    /// The body to send for `upstream_model`: the model replaced where the body holds it,
    /// nothing else changed.
    fn body_for(&self, upstream_model: &str) -> Bytes {
        if upstream_model == self.model {
            return self.body.clone();
        }
        match &self.splice {
            Splice::Anthropic(info) => info.rewrite_model(&self.body, upstream_model),
            Splice::OpenAi(info) => info.rewrite_model(&self.body, upstream_model),
            Splice::Path => self.body.clone(),
        }
    }

    /// The client's path and query as a `tollgate` provider (the gateway) gets them: the
    /// Anthropic path without the `/anthropic` prefix; the others whole, but for the query,
    /// which only a Gemini stream keeps (`alt=sse`; the `key` never leaves).
    fn path_and_query(&self) -> &str {
        match self.format {
            ApiFormat::Anthropic => {
                let pq = self
                    .parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/v1/messages");
                pq.strip_prefix("/anthropic").unwrap_or(pq)
            }
            _ => self.parts.uri.path(),
        }
    }
}

/// A target's answer that reaches the client.
struct Answer {
    resp: Response<UpstreamBody>,
    target: Target,
    upstream_model: String,
    sent: Instant,
}

/// A refusal in the client's API format: status, body and extra headers.
fn refusal(
    format: ApiFormat,
    denial: &Denial,
    request_id: &str,
) -> (StatusCode, Bytes, Vec<(String, String)>) {
    match format {
        ApiFormat::Anthropic => (
            StatusCode::from_u16(denial.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            denial_body(denial, request_id),
            denial.headers(),
        ),
        ApiFormat::OpenAiResponses | ApiFormat::OpenAiChat => {
            let (status, body) = openai::error::refusal(denial);
            (status, body, openai::error::refusal_headers(denial))
        }
        ApiFormat::Gemini(_) => {
            let now = jiff::Timestamp::now();
            let (status, body) = crate::gemini::error::refusal_at(denial, now);
            (status, body, crate::gemini::error::refusal_headers(denial, now))
        }
    }
}

/// Gemini clients may send their key as the `key` query parameter: it becomes the
/// `x-goog-api-key` header (the one place keys are read from), and leaves the URI, so neither
/// a log line, an error message nor an upstream request can carry it.
fn gemini_key_into_header(req: &mut Request<Incoming>) -> Result<(), Denial> {
    let query = req.uri().query().map(str::to_owned);
    let key = crate::gemini::request::presented_key(req.headers(), query.as_deref())?;
    if query.is_some() {
        let rest = crate::gemini::request::query_without_key(query.as_deref());
        let pq = match rest {
            Some(q) => format!("{}?{q}", req.uri().path()),
            None => req.uri().path().to_owned(),
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = pq.parse().ok();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if let Some(key) = key {
        let mut value = HeaderValue::from_str(&key).map_err(|_| Denial::UnknownKey)?;
        value.set_sensitive(true);
        req.headers_mut()
            .insert(crate::gemini::request::KEY_HEADER, value);
    }
    Ok(())
}

/// The targets of the route serving `model` that `key` may use (model rules judge the
/// requested name and the model each target serves), or why none.
fn permitted_targets(
    snapshot: &Snapshot,
    key: &KeyEntry,
    model: &str,
    format: ApiFormat,
) -> Result<Vec<Target>, Denial> {
    let refused = |served: Option<String>| Denial::ModelNotAllowed {
        model: model.to_owned(),
        served,
        key: key.id.clone(),
        allowed: key.allowed_patterns().into_iter().map(str::to_owned).collect(),
    };
    match snapshot.targets_for(key, model, format) {
        None if key.may_use(model) => Err(Denial::UnknownModel {
            model: model.to_owned(),
        }),
        None => Err(refused(None)),
        Some(targets) if targets.is_empty() => {
            // Name the served model when the requested name alone would pass.
            let served = snapshot
                .route(model, format)
                .and_then(|t| t.iter().find_map(|t| t.model.clone()))
                .filter(|served| served != model && key.may_use(model));
            Err(refused(served))
        }
        Some(targets) => Ok(targets),
    }
}

/// What a request holds between its admission and its upstream answer. When the request
/// future is dropped first (the client left), its drop releases the admission at once: the
/// reservation and slots go, and the prompt's input estimate is charged once the request
/// was on its way upstream (the provider may have processed it); the audit trail records it.
struct Pending {
    admitted: Option<Admitted>,
    exchange: Option<ExchangeAudit>,
    endpoint: &'static str,
    model: String,
    /// Provider and model of the target being tried, once one is.
    upstream: Option<(String, String)>,
    /// What an abandoned request is charged: its whole reservation.
    abandon: Settlement,
    /// The same, as tokens for the log and the audit record.
    abandon_usage: crate::usage::Usage,
    /// The key's slot for a request on a learned estimate, held until the response ends.
    slot: Option<OptimisticSlot>,
    span: tracing::Span,
    sent: Instant,
}

impl Pending {
    /// Hands the admission and the audit record over to the response.
    fn take(&mut self) -> (Option<Admitted>, Option<ExchangeAudit>) {
        (self.admitted.take(), self.exchange.take())
    }

    /// Nothing was used (every target failed): releases without charging.
    fn release(mut self) {
        if let Some(a) = self.admitted.take() {
            a.settle(Settlement::default());
        }
        self.exchange = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some((provider, upstream_model)) = self.upstream.take() else {
            // Never sent: the admission's own drop releases it.
            return;
        };
        if self.admitted.is_none() && self.exchange.is_none() {
            return;
        }
        let charge = self.abandon;
        if let Some(a) = self.admitted.take() {
            a.settle(charge);
        }
        let usage = self.abandon_usage;
        tracing::warn!(
            parent: &self.span,
            provider = %provider,
            upstream_model = %upstream_model,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cost_micro_usd = charge.actual_micro_usd,
            "request abandoned before the response: admission released, its reservation charged"
        );
        if let Some(a) = self.exchange.take() {
            a.finish(ExchangeEnd {
                endpoint: self.endpoint,
                model: &self.model,
                upstream_model: &upstream_model,
                provider: &provider,
                status: 0,
                outcome: Outcome::ClientGone.as_str(),
                complete: false,
                usage: &usage,
                usage_estimated: true,
                cost_micro_usd: charge.actual_micro_usd,
                latency: self.sent.elapsed(),
                ttfb: None,
            });
        }
    }
}

/// Whether an answer moves on to the route's next target: a provider's 429 or 5xx does. A
/// `tollgate` provider's answer never does: the gateway already fell back among its own
/// providers, and its refusals (budget, rate limit, revoked key, fail-closed ledger) are
/// final and reach the client as they are; only failing to reach it moves on.
fn falls_back(kind: ProviderKind, status: StatusCode) -> bool {
    kind != ProviderKind::Tollgate && (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
}

/// The client's response: the upstream's status and headers, its body metered. `stamp` is
/// this proxy's request id for `x-tollgate-request-id`; none behind a `tollgate` provider,
/// whose answer (ids included) reaches the client unchanged.
fn respond(
    resp: Response<UpstreamBody>,
    completion: Completion,
    format: ApiFormat,
    accounted: bool,
    idle: Duration,
    stamp: Option<&str>,
) -> Response<ProxyBody> {
    let (parts, body) = resp.into_parts();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let tap = Tap::for_response(format, content_type, accounted && parts.status.is_success());
    let mut out = Response::new(Either::Right(boxed(MeteredBody::new(
        body, tap, idle, completion,
    ))));
    *out.status_mut() = parts.status;
    *out.headers_mut() = response_headers(&parts.headers);
    if let Some(v) = stamp.and_then(|id| HeaderValue::from_str(id).ok()) {
        out.headers_mut().insert("x-tollgate-request-id", v);
    }
    out
}

async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Denial> {
    // A declared length over the limit is refused before waiting for any of it.
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(Denial::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Denial::TooLarge { limit }),
        Err(e) => Err(Denial::InvalidRequest {
            detail: format!("could not read the request body: {e}"),
        }),
    }
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = status;
    r
}

fn json_response(v: serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(v.to_string()))));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn model_object(id: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "model",
        "id": id,
        "display_name": id,
        "created_at": "1970-01-01T00:00:00Z",
    })
}

/// The OpenAI API's `GET /v1/models` answer.
fn openai_models_page(ids: &[String]) -> serde_json::Value {
    serde_json::json!({
        "object": "list",
        "data": ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "tollgate"}))
            .collect::<Vec<_>>(),
    })
}

fn models_page(ids: &[String]) -> serde_json::Value {
    serde_json::json!({
        "data": ids.iter().map(|id| model_object(id)).collect::<Vec<_>>(),
        "has_more": false,
        "first_id": ids.first(),
        "last_id": ids.last(),
    })
}

/// Holds the in-flight gauge up for the life of a request handler.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.in_flight().inc();
        Self(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_paths() {
        let post = Method::POST;
        let call = |format, kind| Endpoint::Call {
            format,
            kind,
            model: None,
        };
        let messages = call(ApiFormat::Anthropic, RequestKind::Messages);
        assert_eq!(classify(&post, "/anthropic/v1/messages"), messages);
        assert_eq!(classify(&post, "/v1/messages"), messages);
        assert_eq!(
            classify(&post, "/anthropic/v1/messages/count_tokens"),
            call(ApiFormat::Anthropic, RequestKind::CountTokens)
        );
        assert_eq!(classify(&Method::GET, "/anthropic/v1/models"), Endpoint::Models);
        assert_eq!(
            classify(&Method::GET, "/v1/models/claude-opus-4-8"),
            Endpoint::Model("claude-opus-4-8".into())
        );
        assert_eq!(classify(&Method::HEAD, "/"), Endpoint::Probe);
        assert_eq!(classify(&post, "/mcp"), Endpoint::Mcp);
        assert_eq!(classify(&Method::GET, "/anthropic/mcp"), Endpoint::Mcp);
        assert_eq!(classify(&Method::DELETE, "/mcp/"), Endpoint::Mcp);
        assert_eq!(classify(&Method::HEAD, "/anthropic"), Endpoint::Probe);
        assert_eq!(classify(&Method::HEAD, "/anthropic/api/hello"), Endpoint::Probe);
        assert_eq!(classify(&Method::GET, "/v1/messages"), Endpoint::NotFound);
        assert_eq!(classify(&post, "/anthropicx/v1/messages"), Endpoint::NotFound);
        assert_eq!(classify(&post, "/v1/complete"), Endpoint::NotFound);
        // Codex CLI and Chat Completions clients.
        for p in ["/openai/v1/responses", "/v1/responses"] {
            assert_eq!(
                classify(&post, p),
                call(ApiFormat::OpenAiResponses, RequestKind::Messages),
                "{p}"
            );
        }
        assert_eq!(
            classify(&post, "/openai/v1/chat/completions"),
            call(ApiFormat::OpenAiChat, RequestKind::Messages)
        );
        assert_eq!(
            classify(&Method::GET, "/openai/v1/models"),
            Endpoint::OpenAiModels
        );
        assert_eq!(classify(&Method::GET, "/openai/v1/responses"), Endpoint::NotFound);
        // Gemini CLI: the model is in the path.
        use crate::gemini::Method as G;
        for (p, m, kind) in [
            (
                "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
                G::Generate,
                RequestKind::Messages,
            ),
            (
                "/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent",
                G::StreamGenerate,
                RequestKind::Messages,
            ),
            (
                "/v1beta/models/gemini-2.5-pro:countTokens",
                G::CountTokens,
                RequestKind::CountTokens,
            ),
        ] {
            assert_eq!(
                classify(&post, p),
                Endpoint::Call {
                    format: ApiFormat::Gemini(m),
                    kind,
                    model: Some("gemini-2.5-pro".into())
                },
                "{p}"
            );
        }
        assert_eq!(
            classify(
                &Method::GET,
                "/gemini/v1beta/models/gemini-2.5-pro:generateContent"
            ),
            Endpoint::NotFound
        );
        assert_eq!(
            classify(&post, "/gemini/v1beta/models/x:delete"),
            Endpoint::NotFound
        );
    }

    #[test]
    fn a_tollgate_providers_answer_is_final() {
        for status in [429, 500, 502, 503, 529] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(falls_back(ProviderKind::Anthropic, status), "{status}");
            assert!(!falls_back(ProviderKind::Tollgate, status), "{status}");
        }
        for status in [200, 400, 401, 402, 403, 404] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(!falls_back(ProviderKind::Anthropic, status), "{status}");
            assert!(!falls_back(ProviderKind::Tollgate, status), "{status}");
        }
    }
}
