//! Prometheus metrics of the operator, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A `result` label: `ok` or `error`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: String,
}

/// A `kind` label: the resource kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The resource kind.
    pub kind: String,
}

/// Every operator metric.
pub struct Metrics {
    /// The registry the metrics are encoded from.
    pub registry: Registry,
    /// Reconciliations by result.
    pub reconciles: Family<ResultLabel, Counter>,
    /// Reconciliation duration in seconds.
    pub reconcile_seconds: Histogram,
    /// Compile duration in seconds.
    pub compile_seconds: Histogram,
    /// Keys in the compiled policy.
    pub policy_keys: Gauge,
    /// Key shard ConfigMaps.
    pub policy_shards: Gauge,
    /// Bytes of all policy ConfigMaps.
    pub policy_bytes: Gauge,
    /// Resources left out of the policy (`Ready=False`), by kind.
    pub not_ready: Family<KindLabel, Gauge>,
    /// ConfigMap applies and deletes.
    pub config_map_writes: Counter,
    /// Status patches.
    pub status_writes: Counter,
    /// Virtual-key Secrets generated.
    pub secrets_generated: Counter,
    /// Failed spend reads.
    pub spend_errors: Counter,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// Admission reviews answered by the injection webhook, by outcome
    /// (injected, skipped, denied, invalid).
    pub admissions: Family<ResultLabel, Counter>,
    /// Webhook certificate renewals (self-managed mode) and reloads (files mode).
    pub webhook_cert_changes: Counter,
    /// Mirrored policy ConfigMaps and credentials Secrets written or deleted in app namespaces.
    pub mirror_writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `tollgate_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate_operator");
        let m = Self {
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            compile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            policy_keys: Gauge::default(),
            policy_shards: Gauge::default(),
            policy_bytes: Gauge::default(),
            not_ready: Family::default(),
            config_map_writes: Counter::default(),
            status_writes: Counter::default(),
            secrets_generated: Counter::default(),
            spend_errors: Counter::default(),
            leader: Gauge::default(),
            admissions: Family::default(),
            webhook_cert_changes: Counter::default(),
            mirror_writes: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Policy reconciliations by result",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_seconds",
            "Time to reconcile the policy",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "compile_seconds",
            "Time to compile the policy",
            m.compile_seconds.clone(),
        );
        registry.register(
            "policy_keys",
            "Virtual keys in the compiled policy",
            m.policy_keys.clone(),
        );
        registry.register("policy_shards", "Key shard ConfigMaps", m.policy_shards.clone());
        registry.register(
            "policy_bytes",
            "Bytes of all policy ConfigMaps",
            m.policy_bytes.clone(),
        );
        registry.register(
            "not_ready_resources",
            "Resources left out of the policy, by kind",
            m.not_ready.clone(),
        );
        registry.register(
            "config_map_writes",
            "Policy ConfigMap applies and deletes",
            m.config_map_writes.clone(),
        );
        registry.register("status_writes", "Status patches", m.status_writes.clone());
        registry.register(
            "admissions",
            "Pod admission reviews answered by the injection webhook, by result",
            m.admissions.clone(),
        );
        registry.register(
            "webhook_cert_changes",
            "Webhook serving certificate renewals and reloads",
            m.webhook_cert_changes.clone(),
        );
        registry.register(
            "mirror_writes",
            "Policy objects written or deleted in injection-enabled namespaces",
            m.mirror_writes.clone(),
        );
        registry.register(
            "secrets_generated",
            "Virtual-key Secrets generated",
            m.secrets_generated.clone(),
        );
        registry.register(
            "spend_errors",
            "Failed reads of budget spend",
            m.spend_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.leader.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
