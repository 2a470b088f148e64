//! Prometheus metrics. Labels carry key ids, teams, models and providers, never secrets.
//! Latency histograms are labelled by team, model and provider only, to bound cardinality on
//! shared gateways with thousands of keys.
//!
//! Every label value is bounded by configuration, never chosen by a request: key ids, teams,
//! budgets, providers and MCP servers come from the policy; a model name the policy does not
//! know (no exact route, route target, price or model rule naming it) is `other`
//! ([`crate::policy::Snapshot::model_label`]), and so is an MCP tool name no upstream server
//! listed (see [`crate::mcp`]). Callers pass labels already bounded.
//!
//! Who owns a key is not repeated on every series: `tollgate_key_info{key_id,team,user}` (1
//! per key of the live policy) is joined on `key_id` where a dashboard wants users. Names
//! follow Prometheus' conventions (`_total` counters, base units in the name); README.md
//! maps them to the OpenTelemetry GenAI metric conventions.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::policy::Snapshot;
use crate::usage::Usage;

/// Identity of a forwarded request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Virtual key id.
    pub key_id: String,
    /// Team id, empty when none.
    pub team: String,
    /// Requested model name.
    pub model: String,
    /// Provider id.
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    key_id: String,
    team: String,
    model: String,
    provider: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    key_id: String,
    team: String,
    model: String,
    provider: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    reason: &'static str,
    key_id: String,
    team: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    team: String,
    model: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThresholdLabels {
    budget: String,
    threshold: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpCallLabels {
    key_id: String,
    team: String,
    server: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    provider: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyInfoLabels {
    key_id: String,
    team: String,
    user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
}

/// The build's labels: `version`, and `revision` when the build set `TOLLGATE_REVISION`.
fn build_labels() -> Vec<(&'static str, String)> {
    let mut labels = vec![("version", env!("CARGO_PKG_VERSION").to_owned())];
    if let Some(rev) = option_env!("TOLLGATE_REVISION").filter(|r| !r.is_empty()) {
        labels.push(("revision", rev.to_owned()));
    }
    labels
}

/// The info series of the live policy, as last published.
#[derive(Default)]
struct LivePolicy {
    keys: HashSet<KeyInfoLabels>,
    revision: Option<String>,
}

type HistogramFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// All metrics of one proxy process.
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<RequestLabels, Counter>,
    incomplete: Family<RequestLabels, Counter>,
    estimated: Family<RequestLabels, Counter>,
    unpriced: Family<ModelLabels, Counter>,
    upstream_duration: HistogramFamily,
    ttfb: HistogramFamily,
    in_flight: Gauge,
    reloads: Family<OutcomeLabels, Counter>,
    budget_spent: Family<BudgetLabels, Gauge>,
    budget_limit: Family<BudgetLabels, Gauge>,
    thresholds: Family<ThresholdLabels, Counter>,
    ledger_errors: Family<OpLabels, Counter>,
    policy_ok: Gauge,
    policy_keys: Gauge,
    mcp_tool_calls: Family<McpCallLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    ejections: Family<ProviderLabels, Counter>,
    build_info: Family<Vec<(&'static str, String)>, Gauge>,
    key_info: Family<KeyInfoLabels, Gauge>,
    revision_info: Family<RevisionLabels, Gauge>,
    policy_loaded: Gauge,
    live: Mutex<LivePolicy>,
    audit: crate::audit::AuditMetrics,
    outbox: crate::ledger::outbox::OutboxMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let m = Self {
            requests: Family::default(),
            denials: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            incomplete: Family::default(),
            estimated: Family::default(),
            unpriced: Family::default(),
            upstream_duration: HistogramFamily::new_with_constructor(latency_histogram),
            ttfb: HistogramFamily::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            reloads: Family::default(),
            budget_spent: Family::default(),
            budget_limit: Family::default(),
            thresholds: Family::default(),
            ledger_errors: Family::default(),
            policy_ok: Gauge::default(),
            policy_keys: Gauge::default(),
            mcp_tool_calls: Family::default(),
            fallbacks: Family::default(),
            ejections: Family::default(),
            build_info: Family::default(),
            key_info: Family::default(),
            revision_info: Family::default(),
            policy_loaded: Gauge::default(),
            live: Mutex::new(LivePolicy::default()),
            registry: Registry::default(),
            audit: crate::audit::AuditMetrics::default(),
            outbox: crate::ledger::outbox::OutboxMetrics::default(),
        };
        registry.register(
            "requests",
            "Requests forwarded upstream, by response status",
            m.requests.clone(),
        );
        registry.register(
            "denials",
            "Requests refused by the gateway, by reason",
            m.denials.clone(),
        );
        registry.register("tokens", "Tokens by billing class", m.tokens.clone());
        registry.register(
            "cost_micro_usd",
            "Cost in micro-USD (each request rounded up)",
            m.cost.clone(),
        );
        registry.register(
            "responses_incomplete",
            "Responses that ended without message_stop (cut streams, stream errors, client gone)",
            m.incomplete.clone(),
        );
        registry.register(
            "usage_estimated_responses",
            "Responses that ended without their final usage, charged by what they delivered",
            m.estimated.clone(),
        );
        registry.register(
            "unpriced_responses",
            "Responses with tokens whose model has no price (cost not counted): fix the price table",
            m.unpriced.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "From sending upstream to the end of the response body",
            m.upstream_duration.clone(),
        );
        registry.register(
            "upstream_ttfb_seconds",
            "From sending upstream to the first body byte",
            m.ttfb.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being proxied now",
            m.in_flight.clone(),
        );
        registry.register(
            "budget_spent_micro_usd",
            "Settled spend in the current window, as of this replica's last settlement",
            m.budget_spent.clone(),
        );
        registry.register("budget_limit_micro_usd", "Budget limit", m.budget_limit.clone());
        registry.register(
            "budget_threshold_crossed",
            "Soft budget thresholds (percent) crossed",
            m.thresholds.clone(),
        );
        registry.register(
            "ledger_errors",
            "Ledger operations that failed, by operation",
            m.ledger_errors.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reload attempts by result",
            m.reloads.clone(),
        );
        registry.register(
            "policy_last_reload_success",
            "1 when the newest policy sources were accepted, 0 when they were rejected",
            m.policy_ok.clone(),
        );
        registry.register(
            "policy_keys",
            "Virtual keys in the live policy",
            m.policy_keys.clone(),
        );
        registry.register(
            "policy_last_reload_success_timestamp_seconds",
            "When the live policy revision was applied (Unix seconds); 0 before one was",
            m.policy_loaded.clone(),
        );
        registry.register(
            "policy_revision_info",
            "1 for the revision (hex SHA-256 of the policy sources) this proxy enforces",
            m.revision_info.clone(),
        );
        registry.register(
            "key_info",
            "1 per virtual key of the live policy, with its owner: join on key_id (team and user empty when none)",
            m.key_info.clone(),
        );
        registry.register(
            "build_info",
            "1, labelled with the version (and revision, when the build set it) of this tollgate-proxy",
            m.build_info.clone(),
        );
        m.build_info.get_or_create(&build_labels()).set(1);
        m.audit.register(&mut registry);
        m.outbox.register(&mut registry);
        registry.register(
            "mcp_tool_calls",
            "MCP tools/call requests by server, tool and outcome (ok, tool_error, upstream_error, unavailable, denied, unknown)",
            m.mcp_tool_calls.clone(),
        );
        registry.register(
            "upstream_fallbacks",
            "Requests that failed on a provider (connect error, timeout, 429, 5xx) and moved on to the route's next target (result=taken), or did not because the provider's retry budget was spent (result=refused)",
            m.fallbacks.clone(),
        );
        registry.register(
            "provider_ejections",
            "Times a provider was ejected after consecutive failures (tried after the healthy targets until the ejection ends)",
            m.ejections.clone(),
        );
        Self { registry, ..m }
    }

    /// The audit trail's metrics.
    pub fn audit(&self) -> &crate::audit::AuditMetrics {
        &self.audit
    }

    /// The settlement outbox's metrics.
    pub fn outbox(&self) -> &crate::ledger::outbox::OutboxMetrics {
        &self.outbox
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a refusal.
    pub fn denial(&self, reason: &'static str, key_id: &str, team: &str) {
        let labels = DenialLabels {
            reason,
            key_id: key_id.to_owned(),
            team: team.to_owned(),
        };
        self.denials.get_or_create(&labels).inc();
    }

    /// Counts a finished upstream exchange with its usage and cost.
    pub fn completed(
        &self,
        l: &RequestLabels,
        status: u16,
        usage: &Usage,
        cost_micro_usd: u64,
        complete: bool,
        usage_estimated: bool,
    ) {
        let s = StatusLabels {
            key_id: l.key_id.clone(),
            team: l.team.clone(),
            model: l.model.clone(),
            provider: l.provider.clone(),
            status,
        };
        self.requests.get_or_create(&s).inc();
        for (class, n) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_write_5m", usage.cache_write_5m_tokens),
            ("cache_write_1h", usage.cache_write_1h_tokens),
            ("cache_read", usage.cache_read_tokens),
        ] {
            if n > 0 {
                let t = TokenLabels {
                    key_id: l.key_id.clone(),
                    team: l.team.clone(),
                    model: l.model.clone(),
                    provider: l.provider.clone(),
                    class,
                };
                self.tokens.get_or_create(&t).inc_by(n);
            }
        }
        if cost_micro_usd > 0 {
            self.cost.get_or_create(l).inc_by(cost_micro_usd);
        }
        if !complete {
            self.incomplete.get_or_create(l).inc();
        }
        if usage_estimated {
            self.estimated.get_or_create(l).inc();
        }
    }

    /// Counts a response whose model has no price.
    pub fn unpriced(&self, model: &str) {
        self.unpriced
            .get_or_create(&ModelLabels {
                model: model.to_owned(),
            })
            .inc();
    }

    /// Records upstream timings in seconds.
    pub fn timings(&self, l: &RequestLabels, ttfb: Option<f64>, total: f64) {
        let ll = LatencyLabels {
            team: l.team.clone(),
            model: l.model.clone(),
            provider: l.provider.clone(),
        };
        if let Some(t) = ttfb {
            self.ttfb.get_or_create(&ll).observe(t);
        }
        self.upstream_duration.get_or_create(&ll).observe(total);
    }

    /// The in-flight gauge.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// Records a budget's spend after a settlement.
    pub fn budget_spend(&self, budget: &str, spent: u64, limit: u64) {
        let l = BudgetLabels {
            budget: budget.to_owned(),
        };
        self.budget_spent
            .get_or_create(&l)
            .set(i64::try_from(spent).unwrap_or(i64::MAX));
        self.budget_limit
            .get_or_create(&l)
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// Counts an MCP `tools/call`, allowed or not.
    pub fn mcp_tool_call(&self, key_id: &str, team: &str, server: &str, tool: &str, outcome: &'static str) {
        let labels = McpCallLabels {
            key_id: key_id.to_owned(),
            team: team.to_owned(),
            server: server.to_owned(),
            tool: tool.to_owned(),
            outcome,
        };
        self.mcp_tool_calls.get_or_create(&labels).inc();
    }

    /// Counts a crossed soft threshold.
    pub fn threshold_crossed(&self, budget: &str, threshold: u8) {
        self.thresholds
            .get_or_create(&ThresholdLabels {
                budget: budget.to_owned(),
                threshold,
            })
            .inc();
    }

    /// Counts a fallback from `provider`: taken, or refused by its retry budget.
    pub fn fallback(&self, provider: &str, taken: bool) {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                provider: provider.to_owned(),
                result: if taken { "taken" } else { "refused" },
            })
            .inc();
    }

    /// Counts an ejection of `provider`.
    pub fn ejected(&self, provider: &str) {
        self.ejections
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .inc();
    }

    /// Counts a failed ledger operation.
    pub fn ledger_error(&self, op: &'static str) {
        self.ledger_errors.get_or_create(&OpLabels { op }).inc();
    }

    /// Records a policy reload outcome.
    pub fn reload(&self, result: &'static str, ok: bool, keys: usize) {
        self.reloads.get_or_create(&OutcomeLabels { result }).inc();
        self.policy_ok.set(i64::from(ok));
        self.policy_keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// Publishes the live policy: its revision, when it was applied and each key's owner
    /// (`tollgate_key_info`). Keys no longer in it lose their series; unchanged keys keep
    /// theirs throughout, so a scrape during a reload never misses one.
    pub fn live_policy(&self, snapshot: &Snapshot) {
        let keys: HashSet<KeyInfoLabels> = snapshot
            .keys()
            .map(|k| KeyInfoLabels {
                key_id: k.id.clone(),
                team: k.team.clone().unwrap_or_default(),
                user: k.user.clone().unwrap_or_default(),
            })
            .collect();
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in &keys {
            self.key_info.get_or_create(k).set(1);
        }
        for gone in live.keys.difference(&keys) {
            self.key_info.remove(gone);
        }
        live.keys = keys;
        let revision = RevisionLabels {
            revision: snapshot.revision.clone(),
        };
        self.revision_info.get_or_create(&revision).set(1);
        // When the revision became live: a forced recompile of the same revision (rotated
        // credentials) does not move it, so replicas on an old revision stay the oldest.
        match live.revision.replace(snapshot.revision.clone()) {
            Some(old) if old == snapshot.revision => {}
            old => {
                if let Some(old) = old {
                    self.revision_info.remove(&RevisionLabels { revision: old });
                }
                self.policy_loaded.set(snapshot.loaded_at.as_second());
            }
        }
        self.policy_keys
            .set(i64::try_from(snapshot.key_count()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_labelled_series() {
        let m = Metrics::new();
        let l = RequestLabels {
            key_id: "k1".into(),
            team: "t".into(),
            model: "gw-opus".into(),
            provider: "anthropic".into(),
        };
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Default::default()
        };
        m.completed(&l, 200, &usage, 123, true, false);
        m.timings(&l, Some(0.01), 0.5);
        m.denial("unknown_key", "", "");
        m.reload("applied", true, 3);
        m.budget_spend("team-day", 1500, 2000);
        m.threshold_crossed("team-day", 50);
        m.ledger_error("admit");
        let text = m.encode();
        for needle in [
            r#"tollgate_requests_total{key_id="k1",team="t",model="gw-opus",provider="anthropic",status="200"} 1"#,
            r#"tollgate_tokens_total{key_id="k1",team="t",model="gw-opus",provider="anthropic",class="output"} 5"#,
            r#"tollgate_cost_micro_usd_total{key_id="k1",team="t",model="gw-opus",provider="anthropic"} 123"#,
            r#"tollgate_denials_total{reason="unknown_key",key_id="",team=""} 1"#,
            "tollgate_upstream_ttfb_seconds_bucket",
            "tollgate_policy_last_reload_success 1",
            "tollgate_policy_keys 3",
            r#"tollgate_budget_spent_micro_usd{budget="team-day"} 1500"#,
            r#"tollgate_budget_limit_micro_usd{budget="team-day"} 2000"#,
            r#"tollgate_budget_threshold_crossed_total{budget="team-day",threshold="50"} 1"#,
            r#"tollgate_ledger_errors_total{op="admit"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(text.contains("tollgate_build_info{version=\""), "{text}");
    }

    fn snapshot(keys: serde_json::Value, revision: &str) -> Snapshot {
        let doc = serde_json::json!({
            "version": 1,
            "teams": [{"id": "platform"}, {"id": "interns"}],
            "keys": keys,
        });
        let loaded = crate::policy::load::LoadedDocument {
            document: serde_json::from_value(doc).unwrap(),
            revision: revision.into(),
        };
        Snapshot::compile(
            loaded,
            &crate::pricing::PriceTable::builtin(),
            &crate::policy::SystemCredentials,
        )
        .unwrap()
    }

    fn info_lines(text: &str, family: &str) -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn key_info_follows_the_live_policy() {
        let m = Metrics::new();
        let sha = |c: char| c.to_string().repeat(64);
        let first = snapshot(
            serde_json::json!([
                {"id": "k1", "sha256": sha('1'), "user": "alice@acme.example", "team": "platform"},
                {"id": "k2", "sha256": sha('2'), "user": "bob@acme.example", "team": "interns"},
                {"id": "k3", "sha256": sha('3')},
            ]),
            "rev-one",
        );
        m.live_policy(&first);
        let text = m.encode();
        assert_eq!(
            info_lines(&text, "tollgate_key_info"),
            [
                r#"tollgate_key_info{key_id="k1",team="platform",user="alice@acme.example"} 1"#,
                r#"tollgate_key_info{key_id="k2",team="interns",user="bob@acme.example"} 1"#,
                r#"tollgate_key_info{key_id="k3",team="",user=""} 1"#,
            ]
        );
        assert_eq!(
            info_lines(&text, "tollgate_policy_revision_info"),
            [r#"tollgate_policy_revision_info{revision="rev-one"} 1"#]
        );
        assert!(text.contains("tollgate_policy_keys 3"), "{text}");

        // k2 moves to another team and owner, k3 is removed, k4 arrives.
        let second = snapshot(
            serde_json::json!([
                {"id": "k1", "sha256": sha('1'), "user": "alice@acme.example", "team": "platform"},
                {"id": "k2", "sha256": sha('2'), "user": "carol@acme.example", "team": "platform"},
                {"id": "k4", "sha256": sha('4'), "user": "dave@acme.example", "team": "interns"},
            ]),
            "rev-two",
        );
        m.live_policy(&second);
        let text = m.encode();
        assert_eq!(
            info_lines(&text, "tollgate_key_info"),
            [
                r#"tollgate_key_info{key_id="k1",team="platform",user="alice@acme.example"} 1"#,
                r#"tollgate_key_info{key_id="k2",team="platform",user="carol@acme.example"} 1"#,
                r#"tollgate_key_info{key_id="k4",team="interns",user="dave@acme.example"} 1"#,
            ]
        );
        assert_eq!(
            info_lines(&text, "tollgate_policy_revision_info"),
            [r#"tollgate_policy_revision_info{revision="rev-two"} 1"#]
        );
        let applied = second.loaded_at.as_second();
        assert!(
            text.contains(&format!(
                "tollgate_policy_last_reload_success_timestamp_seconds {applied}"
            )),
            "{text}"
        );
    }
}
