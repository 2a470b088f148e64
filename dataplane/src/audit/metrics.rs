//! Audit metrics: records spooled and dropped, queue depth, fsync time, and per sink what
//! was shipped, what failed and how far behind it is.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

/// The audit trail's metrics (cheap to clone: every metric is shared).
#[derive(Clone)]
pub struct AuditMetrics {
    records: Family<KindLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
    queue_depth: Gauge,
    pending_bytes: Gauge,
    head_seq: Gauge,
    fsync: Histogram,
    shipped: Family<SinkLabels, Counter>,
    failures: Family<SinkLabels, Counter>,
    lag: Family<SinkLabels, Gauge>,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self {
            records: Family::default(),
            dropped: Family::default(),
            queue_depth: Gauge::default(),
            pending_bytes: Gauge::default(),
            head_seq: Gauge::default(),
            // 10 µs .. ~10 s
            fsync: Histogram::new(exponential_buckets(0.00001, 2.0, 20)),
            shipped: Family::default(),
            failures: Family::default(),
            lag: Family::default(),
        }
    }
}

impl AuditMetrics {
    /// Registers every metric under `audit_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("audit");
        r.register(
            "records",
            "Audit records appended to the spool, by kind",
            self.records.clone(),
        );
        r.register(
            "records_dropped",
            "Audit records lost, by reason (queue_full: the writer fell behind; retention: the spool cap deleted unshipped segments; spool_unwritable: the disk refused writes past the writer's buffer; encode); each loss is also a gap record in the chain",
            self.dropped.clone(),
        );
        r.register(
            "queue_depth",
            "Audit events waiting for the spool writer",
            self.queue_depth.clone(),
        );
        r.register(
            "spool_pending_bytes",
            "Sealed audit records waiting to be written (non-zero while the spool refuses writes; bounded at 8 MiB)",
            self.pending_bytes.clone(),
        );
        r.register(
            "head_seq",
            "Sequence number of the newest spooled record",
            self.head_seq.clone(),
        );
        r.register("fsync_seconds", "Spool fsync duration", self.fsync.clone());
        r.register(
            "sink_records_shipped",
            "Records acknowledged by each sink",
            self.shipped.clone(),
        );
        r.register(
            "sink_failures",
            "Failed delivery attempts, by sink",
            self.failures.clone(),
        );
        r.register(
            "sink_lag_records",
            "Spooled records a sink has not acknowledged yet",
            self.lag.clone(),
        );
    }

    pub(crate) fn spooled(&self, kind: &str) {
        self.records
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub(crate) fn dropped(&self, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc_by(n);
    }

    pub(crate) fn queue_depth(&self) -> &Gauge {
        &self.queue_depth
    }

    pub(crate) fn pending_bytes(&self, bytes: usize) {
        self.pending_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn head(&self, seq: u64) {
        self.head_seq.set(i64::try_from(seq).unwrap_or(i64::MAX));
    }

    pub(crate) fn fsync(&self, secs: f64) {
        self.fsync.observe(secs);
    }

    pub(crate) fn shipped(&self, sink: &str, n: u64) {
        self.shipped
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .inc_by(n);
    }

    pub(crate) fn failure(&self, sink: &str) {
        self.failures
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .inc();
    }

    pub(crate) fn lag(&self, sink: &str, records: u64) {
        self.lag
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(i64::try_from(records).unwrap_or(i64::MAX));
    }
}
