//! `AuditSink`: where the proxy ships its hash-chained audit records. Every field of the
//! policy document's `audit.sinks[]` entry, with the rules the proxy applies per kind
//! (`tollgate_dataplane::audit::config::validate`) as CEL rules, so a sink the proxy would
//! refuse is refused at `kubectl apply`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::bounds;

use super::common::CredentialRef;
use super::provider::ResourceStatus;

/// An audit sink. Cluster-scoped; its name is the sink name in the policy.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "AuditSink",
    doc = "A destination for tollgate-proxy audit records.",
    plural = "auditsinks",
    shortname = "tgaudit",
    category = "tollgate",
    status = "ResourceStatus",
    validation = Rule::new("!self.metadata.name.contains('.')").message("name must not contain '.' (the proxy keeps the sink's offset under its name: letters, digits and '-' only)"),
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind == 'file' || self.endpoint.startsWith('https://') || self.endpoint.startsWith('http://')").message("endpoint must be an http(s) URL (a file path only for kind file)"))]
#[x_kube(validation = Rule::new("!(self.kind in ['splunk', 'datadog', 's3']) || has(self.credential)").message("kinds splunk, datadog and s3 need a credential"))]
#[x_kube(validation = Rule::new("self.kind != 's3' || (has(self.bucket) && has(self.accessKeyId))").message("kind s3 needs bucket and accessKeyId"))]
#[x_kube(validation = Rule::new("self.kind == 's3' || !(has(self.bucket) || has(self.region) || has(self.prefix) || has(self.accessKeyId))").message("bucket, region, prefix and accessKeyId are for kind s3 only"))]
#[x_kube(validation = Rule::new("!has(self.index) || self.kind in ['elasticsearch', 'opensearch', 'splunk']").message("index is for kinds elasticsearch, opensearch and splunk only"))]
#[x_kube(validation = Rule::new("!has(self.source) || self.kind in ['splunk', 'datadog']").message("source is for kinds splunk and datadog only"))]
pub struct AuditSinkSpec {
    /// Sink kind.
    pub kind: SinkKind,
    /// Endpoint URL, or a file path for kind `file`. Elasticsearch/OpenSearch, Splunk and
    /// Datadog: the base URL (`/_bulk`, `/services/collector/event` and `/api/v2/logs` are
    /// appended); S3: the service endpoint, e.g. `https://s3.eu-west-1.amazonaws.com`.
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    #[schemars(length(max = bounds::URL))]
    pub endpoint: String,
    /// Sink credential (copied into the credentials Secret, never into a ConfigMap): webhook
    /// HMAC signing secret, Elasticsearch API key, Splunk HEC token, Datadog API key, S3
    /// secret access key. Required for splunk, datadog and s3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
    /// S3 access key id (kind s3, required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<CredentialRef>,
    /// S3 bucket (kind s3, required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    #[schemars(length(max = bounds::BUCKET))]
    pub bucket: Option<String>,
    /// S3 region (kind s3; default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::CLOUD_ID))]
    pub region: Option<String>,
    /// S3 object key prefix (kind s3; default `tollgate-audit/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::OBJECT_PREFIX))]
    pub prefix: Option<String>,
    /// Elasticsearch/OpenSearch index (default `tollgate-audit`) or Splunk index (default: the
    /// token's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::INDEX))]
    pub index: Option<String>,
    /// Splunk sourcetype (default `tollgate:audit`) or Datadog `ddsource` (default `tollgate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::SOURCE))]
    pub source: Option<String>,
    /// Batching; absent fields keep the proxy's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<AuditBatch>,
    /// Retry backoff (a sink retries a batch until it is accepted: at-least-once); absent
    /// fields keep the proxy's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<AuditRetry>,
}

/// How a sink batches records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditBatch {
    /// Most records per request (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub max_records: Option<u64>,
    /// Most encoded bytes per request (default 4 MiB; a single larger record is still sent
    /// alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub max_bytes: Option<u64>,
    /// Longest a record waits for its batch to fill, in milliseconds (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
}

/// Retry backoff of a sink: exponential from `initialBackoffMs` to `maxBackoffMs`, with jitter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.initialBackoffMs) ? self.initialBackoffMs : 200) <= (has(self.maxBackoffMs) ? self.maxBackoffMs : 30000)").message("initialBackoffMs must not exceed maxBackoffMs (defaults 200 and 30000)"))]
pub struct AuditRetry {
    /// First delay after a failure, in milliseconds (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub initial_backoff_ms: Option<u64>,
    /// Longest delay, in milliseconds (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub max_backoff_ms: Option<u64>,
    /// Timeout of one delivery attempt, in milliseconds (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub timeout_ms: Option<u64>,
}

/// Audit sink kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SinkKind {
    /// HTTP POST of JSON batches, signed with an HMAC header when a credential is set.
    #[default]
    Webhook,
    /// Elasticsearch bulk API.
    Elasticsearch,
    /// OpenSearch bulk API (as Elasticsearch).
    Opensearch,
    /// Splunk HTTP Event Collector.
    Splunk,
    /// Datadog logs intake.
    Datadog,
    /// S3-compatible object storage.
    S3,
    /// A local file (JSON lines).
    File,
}

impl SinkKind {
    /// The kind's name in the policy document.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Elasticsearch => "elasticsearch",
            SinkKind::Opensearch => "opensearch",
            SinkKind::Splunk => "splunk",
            SinkKind::Datadog => "datadog",
            SinkKind::S3 => "s3",
            SinkKind::File => "file",
        }
    }
}
