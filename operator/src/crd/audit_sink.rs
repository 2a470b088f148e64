//! `AuditSink`: where the proxy ships its hash-chained audit records.

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
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AuditSinkSpec {
    /// Sink kind.
    pub kind: SinkKind,
    /// Endpoint URL, or a file path for kind `file`.
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    #[schemars(length(max = bounds::URL))]
    pub endpoint: String,
    /// Sink credential (copied into the credentials Secret, never into a ConfigMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
}

/// Audit sink kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SinkKind {
    /// HTTP POST of JSON batches.
    #[default]
    Webhook,
    /// Elasticsearch bulk API.
    Elasticsearch,
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
            SinkKind::Splunk => "splunk",
            SinkKind::Datadog => "datadog",
            SinkKind::S3 => "s3",
            SinkKind::File => "file",
        }
    }
}
