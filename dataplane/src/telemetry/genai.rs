//! The spans: a [`CallSpan`] per model request (any API format) and a [`ToolSpan`] per MCP
//! `tools/call`, named and attributed as the OpenTelemetry GenAI semantic conventions say
//! (`gen_ai.*`), plus Tollgate's own `tollgate.*` attributes (key id, team, user, session,
//! provider, cost, budget decision). Pure naming lives in small functions tested below.
//!
//! A span is a cheap handle (`None` when tracing is off): it travels in the request's
//! extensions and in the exchange's [`crate::server::accounting::Completion`], and ends when
//! the response ends (finished or refused), or when its last handle drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::denial::Denial;
use crate::limits::plan::RequestKind;
use crate::policy::KeyEntry;
use crate::policy::document::ProviderKind;
use crate::providers::ApiFormat;
use crate::usage::Usage;

/// The GenAI operation of a model request (`gen_ai.operation.name`).
pub fn operation(format: ApiFormat, kind: RequestKind) -> &'static str {
    match (format, kind) {
        // Not a GenAI operation the conventions name: a custom value, as they allow.
        (_, RequestKind::CountTokens) => "count_tokens",
        (ApiFormat::Gemini(_), RequestKind::Messages) => "generate_content",
        (_, RequestKind::Messages) => "chat",
    }
}

/// The provider as the conventions name it (`gen_ai.provider.name`).
pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Vertex => "gcp.vertex_ai",
        ProviderKind::Foundry => "azure.ai.inference",
        ProviderKind::Openai => "openai",
        ProviderKind::Gemini => "gcp.gemini",
        // Another gateway: the provider behind it is its own span's business.
        ProviderKind::Tollgate => "tollgate",
    }
}

/// `error.type` of an answer, when it is an error: the HTTP status for an error status, how
/// the body ended for a broken one (a client leaving is not an error of the exchange).
pub fn error_type(status: u16, outcome: &str) -> Option<String> {
    if status >= 400 {
        Some(status.to_string())
    } else if matches!(outcome, "ended" | "client_gone") {
        None
    } else {
        Some(outcome.to_owned())
    }
}

/// The request's key, as attributes (its id, never the key).
fn key_attributes(key: &KeyEntry) -> Vec<KeyValue> {
    let mut kv = vec![KeyValue::new("tollgate.key_id", key.id.clone())];
    if let Some(team) = &key.team {
        kv.push(KeyValue::new("tollgate.team", team.clone()));
    }
    if let Some(user) = &key.user {
        kv.push(KeyValue::new("tollgate.user", user.clone()));
    }
    kv
}

/// The usage attributes: the conventions count every input token, cached ones included, in
/// `gen_ai.usage.input_tokens`, and break the cached ones out.
fn usage_attributes(usage: &Usage) -> [KeyValue; 4] {
    [
        KeyValue::new("gen_ai.usage.input_tokens", saturating_i64(usage.prompt_tokens())),
        KeyValue::new("gen_ai.usage.output_tokens", saturating_i64(usage.output_tokens)),
        KeyValue::new(
            "gen_ai.usage.cache_read.input_tokens",
            saturating_i64(usage.cache_read_tokens),
        ),
        KeyValue::new(
            "gen_ai.usage.cache_creation.input_tokens",
            saturating_i64(
                usage
                    .cache_write_5m_tokens
                    .saturating_add(usage.cache_write_1h_tokens),
            ),
        ),
    ]
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The span of one model request. Cloning shares the span.
#[derive(Clone, Default)]
pub struct CallSpan(Option<Arc<Call>>);

struct Call {
    cx: Context,
    operation: &'static str,
    admitted: AtomicBool,
}

/// How an exchange that reached a provider ended (see [`CallSpan::finish`]).
pub struct Finished<'a> {
    /// The provider's id in the policy.
    pub provider_id: &'a str,
    /// Its kind.
    pub provider_kind: ProviderKind,
    /// The model the provider was asked for.
    pub upstream_model: &'a str,
    /// The status the client got.
    pub status: u16,
    /// How the body ended ([`crate::server::accounting::Outcome::as_str`]).
    pub outcome: &'a str,
    /// The usage charged.
    pub usage: &'a Usage,
    /// Whether the usage is an estimate (the answer stated none).
    pub usage_estimated: bool,
    /// The cost charged.
    pub cost_micro_usd: u64,
}

impl CallSpan {
    /// Starts the span of a model request at its arrival (a no-op handle when tracing is
    /// off): the child of the client's `traceparent` when it sent a valid one.
    pub fn start(
        headers: &HeaderMap,
        format: ApiFormat,
        kind: RequestKind,
        request_id: &str,
        session_id: Option<&str>,
    ) -> Self {
        let Some(tracer) = super::tracer() else {
            return Self(None);
        };
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let operation = operation(format, kind);
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("tollgate.request_id", request_id.to_owned()),
        ];
        if let Some(s) = session_id {
            attributes.push(KeyValue::new("tollgate.session_id", s.to_owned()));
        }
        let span = tracer
            .span_builder(operation)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        Self(Some(Arc::new(Call {
            cx: parent.with_span(span),
            operation,
            admitted: AtomicBool::new(false),
        })))
    }

    /// The request's span, from the extensions [`CallSpan::start`]'s caller put it in (a
    /// no-op handle when none is there).
    pub fn of(extensions: &http::Extensions) -> Self {
        extensions.get::<CallSpan>().cloned().unwrap_or_default()
    }

    fn set(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(c) = &self.0 {
            c.cx.span().set_attributes(attributes);
        }
    }

    /// The authenticated key (its id, team and user).
    pub fn key(&self, key: &KeyEntry) {
        self.set(key_attributes(key));
    }

    /// What the request asks for: the span is named `{operation} {model}` from here on.
    pub fn requested(&self, model: &str, max_tokens: Option<u64>, stream: bool) {
        let Some(c) = &self.0 else { return };
        let span = c.cx.span();
        span.update_name(format!("{} {model}", c.operation));
        span.set_attribute(KeyValue::new("gen_ai.request.model", model.to_owned()));
        if let Some(m) = max_tokens {
            span.set_attribute(KeyValue::new("gen_ai.request.max_tokens", saturating_i64(m)));
        }
        span.set_attribute(KeyValue::new("tollgate.stream", stream));
    }

    /// The request passed its budgets and rate limits.
    pub fn admitted(&self) {
        let Some(c) = &self.0 else { return };
        c.admitted.store(true, Ordering::Relaxed);
        c.cx.span()
            .set_attribute(KeyValue::new("tollgate.budget.decision", "admitted"));
    }

    /// Puts this span's `traceparent` (and the trace's `tracestate`) on a provider request,
    /// replacing the client's. Tracing off: the headers are left as they are.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let Some(c) = &self.0 else { return };
        headers.remove("traceparent");
        headers.remove("tracestate");
        TraceContextPropagator::new().inject_context(&c.cx, &mut HeaderInjector(headers));
    }

    /// Ends the span of an exchange a provider answered, with its usage and cost.
    pub fn finish(&self, f: Finished<'_>) {
        let Some(c) = &self.0 else { return };
        let span = c.cx.span();
        span.set_attributes(usage_attributes(f.usage));
        span.set_attributes([
            KeyValue::new("gen_ai.provider.name", provider_name(f.provider_kind)),
            // The attribute's name before the conventions renamed it, for older backends.
            KeyValue::new("gen_ai.system", provider_name(f.provider_kind)),
            KeyValue::new("gen_ai.response.model", f.upstream_model.to_owned()),
            KeyValue::new("tollgate.provider", f.provider_id.to_owned()),
            KeyValue::new("tollgate.cost_micro_usd", saturating_i64(f.cost_micro_usd)),
            KeyValue::new("tollgate.usage_estimated", f.usage_estimated),
            KeyValue::new("tollgate.outcome", f.outcome.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(f.status)),
        ]);
        if let Some(e) = error_type(f.status, f.outcome) {
            span.set_status(Status::error(e.clone()));
            span.set_attribute(KeyValue::new("error.type", e));
        }
        span.end();
    }

    /// Ends the span of a refused request (by the gateway, or for want of a provider).
    pub fn refuse(&self, denial: &Denial) {
        let Some(c) = &self.0 else { return };
        let span = c.cx.span();
        let reason = denial.reason();
        if !c.admitted.load(Ordering::Relaxed) {
            // Refused before or at admission: the budget decision is the refusal.
            span.set_attribute(KeyValue::new("tollgate.budget.decision", reason));
        }
        span.set_attributes([
            KeyValue::new("tollgate.denial.reason", reason),
            KeyValue::new("http.response.status_code", i64::from(denial.status())),
            KeyValue::new("error.type", reason),
        ]);
        span.set_status(Status::error(reason));
        span.end();
    }
}

/// The span of one MCP `tools/call`: `execute_tool {tool}`; ends when dropped.
#[derive(Default)]
pub struct ToolSpan(Option<Context>);

impl ToolSpan {
    /// Starts the span of a call of `tool` (the gateway's name for it, `server__tool`) by
    /// `key` in MCP session `session_id`.
    pub fn start(tool: &str, key: &KeyEntry, session_id: &str) -> Self {
        let Some(tracer) = super::tracer() else {
            return Self(None);
        };
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", tool.to_owned()),
            KeyValue::new("tollgate.session_id", session_id.to_owned()),
        ];
        attributes.extend(key_attributes(key));
        let span = tracer
            .span_builder(format!("execute_tool {tool}"))
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start(tracer);
        Self(Some(Context::new().with_span(span)))
    }

    /// How the call went: the MCP server that had the tool (empty when none), the tool's
    /// name there, and the outcome (`ok`, `tool_error`, `denied`, `unknown`,
    /// `upstream_error`, `unavailable`).
    pub fn outcome(&self, server: &str, tool: &str, outcome: &'static str) {
        let Some(cx) = &self.0 else { return };
        let span = cx.span();
        if !server.is_empty() {
            span.set_attributes([
                KeyValue::new("tollgate.mcp.server", server.to_owned()),
                KeyValue::new("tollgate.mcp.tool", tool.to_owned()),
            ]);
        }
        span.set_attribute(KeyValue::new("tollgate.outcome", outcome));
        if outcome != "ok" {
            span.set_attribute(KeyValue::new("error.type", outcome));
            span.set_status(Status::error(outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemini::Method;
    use opentelemetry::Value;

    #[test]
    fn operations_follow_the_conventions() {
        let chat = RequestKind::Messages;
        assert_eq!(operation(ApiFormat::Anthropic, chat), "chat");
        assert_eq!(operation(ApiFormat::OpenAiResponses, chat), "chat");
        assert_eq!(operation(ApiFormat::OpenAiChat, chat), "chat");
        assert_eq!(
            operation(ApiFormat::Gemini(Method::StreamGenerate), chat),
            "generate_content"
        );
        assert_eq!(
            operation(ApiFormat::Anthropic, RequestKind::CountTokens),
            "count_tokens"
        );
    }

    #[test]
    fn providers_are_named_as_the_conventions_name_them() {
        let names = [
            (ProviderKind::Anthropic, "anthropic"),
            (ProviderKind::Bedrock, "aws.bedrock"),
            (ProviderKind::Vertex, "gcp.vertex_ai"),
            (ProviderKind::Foundry, "azure.ai.inference"),
            (ProviderKind::Openai, "openai"),
            (ProviderKind::Gemini, "gcp.gemini"),
        ];
        for (kind, name) in names {
            assert_eq!(provider_name(kind), name);
        }
    }

    #[test]
    fn errors_are_statuses_or_broken_bodies() {
        assert_eq!(error_type(200, "ended"), None);
        assert_eq!(error_type(200, "client_gone"), None);
        assert_eq!(error_type(200, "idle_timeout").as_deref(), Some("idle_timeout"));
        assert_eq!(error_type(529, "ended").as_deref(), Some("529"));
    }

    #[test]
    fn input_tokens_count_the_cached_ones() {
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_write_5m_tokens: 100,
            cache_write_1h_tokens: 1,
            cache_read_tokens: 1000,
            ..Default::default()
        };
        let kv = usage_attributes(&usage);
        let get = |k: &str| {
            kv.iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(get("gen_ai.usage.input_tokens"), Some(Value::I64(1111)));
        assert_eq!(get("gen_ai.usage.output_tokens"), Some(Value::I64(5)));
        assert_eq!(
            get("gen_ai.usage.cache_read.input_tokens"),
            Some(Value::I64(1000))
        );
        assert_eq!(
            get("gen_ai.usage.cache_creation.input_tokens"),
            Some(Value::I64(101))
        );
    }

    #[test]
    fn spans_are_no_ops_when_tracing_is_off() {
        // No pipeline was started in this process: every hook is a no-op.
        let span = CallSpan::start(
            &HeaderMap::new(),
            ApiFormat::Anthropic,
            RequestKind::Messages,
            "req",
            None,
        );
        assert!(span.0.is_none());
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("00-x"));
        span.inject(&mut headers);
        assert_eq!(headers["traceparent"], "00-x");
    }
}
