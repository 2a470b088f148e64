//! Accounting of one finished upstream exchange: cost from the snapshot's price table,
//! metrics, and the single structured log line per request.

use std::sync::Arc;
use std::time::Instant;

use super::admission::Admitted;
use super::metered::TapResult;
use crate::audit::{ExchangeAudit, ExchangeEnd};
use crate::ledger::Settlement;
use crate::limits::history::OutputHistory;
use crate::limits::plan::price_for;
use crate::metrics::{Metrics, RequestLabels};
use crate::policy::{ProviderEntry, Snapshot};
use crate::usage::{RequestSize, Usage, charged_usage};

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream body ended normally.
    Ended,
    /// The upstream connection failed mid-body.
    UpstreamFailed,
    /// The stream went silent past the provider's idle limit.
    IdleTimeout,
    /// The client went away before the end.
    ClientGone,
}

impl Outcome {
    /// The name in logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ended => "ended",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// Everything needed to account an exchange once its body is done.
pub struct Completion {
    /// Metrics sink.
    pub metrics: Arc<Metrics>,
    /// Labels of the exchange (the model as a bounded label).
    pub labels: RequestLabels,
    /// The requested model name.
    pub requested: String,
    /// The snapshot the request started with (its prices apply).
    pub snapshot: Arc<Snapshot>,
    /// The upstream model id, used first for the price lookup.
    pub upstream_model: String,
    /// The provider that answered (its kind and region choose the price).
    pub provider: Arc<ProviderEntry>,
    /// Upstream status.
    pub status: u16,
    /// When the upstream request was sent.
    pub sent: Instant,
    /// The request's span (carries request id, key id, team, model).
    pub span: tracing::Span,
    /// The ledger admission to settle, when a budget or rate limit applied.
    pub admitted: Option<Admitted>,
    /// The exchange's audit record in the making, when auditing.
    pub audit: Option<ExchangeAudit>,
    /// `messages` or `count_tokens`.
    pub endpoint: &'static str,
    /// The request's size, for a response that ends without its final usage.
    pub request: RequestSize,
    /// Where complete responses teach the budget estimate what this key and model (its
    /// label) need: the history and the key id.
    pub history: Option<(Arc<OutputHistory>, String)>,
    /// The key's optimistic slot (see [`OutputHistory::optimistic_slot`]), given back when the
    /// exchange ends.
    pub slot: Option<crate::limits::history::OptimisticSlot>,
    /// The request's OpenTelemetry span, ended here.
    pub otel: crate::telemetry::CallSpan,
}

/// Cost of an exchange, and whether the model had its own price (an unpriced model is
/// charged at the dearest price in the table, so it cannot escape a budget).
fn cost_micro_usd(
    snapshot: &Snapshot,
    provider: &ProviderEntry,
    upstream_model: &str,
    requested: &str,
    usage: &Usage,
) -> (u64, bool) {
    let (price, priced) = price_for(&snapshot.prices, provider.pricing(), upstream_model, requested);
    (price.map_or(0, |p| p.cost(usage).micro_usd_ceil()), priced)
}

impl Completion {
    /// Shows response bytes to the audit capture (kept only under `full` capture).
    pub fn observe(&mut self, data: &[u8]) {
        if let Some(a) = self.audit.as_mut() {
            a.observe_response(data);
        }
    }

    /// Accounts the exchange: settlement, metrics, audit and one log line. A metered
    /// response without its final usage is charged by [`crate::usage::charged_usage`].
    pub fn finish(mut self, tap: TapResult, first_byte: Option<Instant>, outcome: Outcome) {
        let TapResult {
            usage,
            complete,
            stream_error,
            delivered,
        } = tap;
        let (usage, estimated) = match delivered {
            Some(d) => charged_usage(usage, d, self.request),
            None => (usage.unwrap_or_default(), false),
        };
        let (cost, priced) = cost_micro_usd(
            &self.snapshot,
            &self.provider,
            &self.upstream_model,
            &self.requested,
            &usage,
        );
        let estimate = self.admitted.as_ref().map_or(0, Admitted::estimate_micro_usd);
        if let Some(a) = self.admitted.take() {
            a.settle(Settlement {
                actual_micro_usd: cost,
                actual_tokens: usage.input_tokens + usage.output_tokens,
            });
        }
        if let Some((history, key_id)) = self.history.take() {
            if complete && !estimated && (200..300).contains(&self.status) {
                history.record(
                    &key_id,
                    &self.upstream_model,
                    usage.output_tokens,
                    self.request.max_output_tokens,
                );
            }
        }
        let total = self.sent.elapsed();
        let ttfb = first_byte.map(|t| t.duration_since(self.sent));
        if let Some(a) = self.audit.take() {
            a.finish(ExchangeEnd {
                endpoint: self.endpoint,
                model: &self.requested,
                upstream_model: &self.upstream_model,
                provider: &self.labels.provider,
                status: self.status,
                outcome: outcome.as_str(),
                complete,
                usage: &usage,
                usage_estimated: estimated,
                cost_micro_usd: cost,
                latency: total,
                ttfb,
            });
        }
        self.metrics
            .completed(&self.labels, self.status, &usage, cost, complete, estimated);
        if !priced && usage.total_tokens() > 0 {
            self.metrics
                .unpriced(self.snapshot.model_label(&self.upstream_model));
            tracing::warn!(
                parent: &self.span,
                upstream_model = %self.upstream_model,
                "no price for this model: charged at the dearest price in the table"
            );
        }
        self.metrics
            .timings(&self.labels, ttfb.map(|d| d.as_secs_f64()), total.as_secs_f64());
        // OpenTelemetry hook: the span ends with the exchange.
        self.otel.finish(crate::telemetry::Finished {
            provider_id: &self.provider.id,
            provider_kind: self.provider.kind,
            upstream_model: &self.upstream_model,
            status: self.status,
            outcome: outcome.as_str(),
            usage: &usage,
            usage_estimated: estimated,
            cost_micro_usd: cost,
        });
        tracing::info!(
            parent: &self.span,
            provider = %self.labels.provider,
            upstream_model = %self.upstream_model,
            status = self.status,
            outcome = outcome.as_str(),
            complete,
            stream_error = stream_error.as_deref(),
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cache_write_5m_tokens = usage.cache_write_5m_tokens,
            cache_write_1h_tokens = usage.cache_write_1h_tokens,
            cache_read_tokens = usage.cache_read_tokens,
            usage_estimated = estimated,
            cost_micro_usd = cost,
            estimate_micro_usd = estimate,
            priced,
            ttfb_ms = ttfb.map(|d| d.as_millis() as u64),
            duration_ms = total.as_millis() as u64,
            "request completed"
        );
    }
}
