//! `ModelProvider`: an upstream model API the proxy forwards to, and `ModelRoute`: which
//! requested model names go to which providers.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::bounds;

use super::common::{Condition, CredentialRef};

/// A model provider. Cluster-scoped; its name is the provider id routes refer to.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ModelProvider",
    doc = "A model provider API tollgate-proxy forwards to.",
    plural = "modelproviders",
    shortname = "tgprovider",
    category = "tollgate",
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelProviderSpec {
    /// Which API the provider speaks: `anthropic` or `foundry` (the kinds tollgate-proxy
    /// implements).
    pub kind: ProviderKind,
    /// Base URL, e.g. `https://api.anthropic.com` (`http://` only for local tests).
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http(s) URL"))]
    #[schemars(length(max = bounds::URL))]
    pub endpoint: String,
    /// Cloud region (Bedrock, Vertex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::CLOUD_ID))]
    pub region: Option<String>,
    /// Cloud project (Vertex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::CLOUD_ID))]
    pub project: Option<String>,
    /// The provider credential (copied into the credentials Secret, never into a ConfigMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
    /// Timeouts for calls to this provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

/// Provider API kinds: exactly those tollgate-proxy forwards to
/// (`tollgate_dataplane::policy::validate::SUPPORTED_PROVIDER_KINDS`, a test keeps them equal),
/// except `tollgate`, the gateway as a credential-free sidecar's provider, which only the
/// operator writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProviderKind {
    /// The Anthropic Messages API.
    #[default]
    Anthropic,
    /// Azure AI Foundry.
    Foundry,
    /// A kind the schema no longer admits (`bedrock`, `vertex` and `openai` were once listed
    /// but never implemented): such an object stored earlier reads as this and is reported
    /// `UnsupportedKind`, rather than failing the watch of every ModelProvider.
    #[serde(other)]
    #[schemars(skip)]
    Unsupported,
}

impl ProviderKind {
    /// The kind the policy document names; `None` for [`ProviderKind::Unsupported`].
    pub fn document_kind(self) -> Option<tollgate_dataplane::policy::document::ProviderKind> {
        use tollgate_dataplane::policy::document::ProviderKind as Doc;
        match self {
            ProviderKind::Anthropic => Some(Doc::Anthropic),
            ProviderKind::Foundry => Some(Doc::Foundry),
            ProviderKind::Unsupported => None,
        }
    }
}

/// Provider call timeouts in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Time allowed until the response headers arrive (default 600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub response_headers_ms: Option<u64>,
    /// Longest silence allowed inside a streamed body (default 300000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub stream_idle_ms: Option<u64>,
}

/// A route: requests for models matching `match` go to the first target, later targets are
/// fallbacks. Cluster-scoped; routes are tried by ascending `priority`, then by name.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ModelRoute",
    doc = "Maps requested model names (exact or glob) to ordered ModelProvider targets.",
    plural = "modelroutes",
    shortname = "tgroute",
    category = "tollgate",
    status = "ResourceStatus",
    printcolumn = r#"{"name":"Match","type":"string","jsonPath":".spec.match"}"#,
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.targets[0].provider"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.targets[0].model"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ModelRouteSpec {
    /// The requested model name served: exact (`gw-opus`) or a glob (`claude-*`).
    #[serde(rename = "match")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    #[schemars(length(max = bounds::MODEL))]
    pub match_: String,
    /// Lower priorities are tried first (default 100).
    #[serde(default = "default_priority")]
    #[schemars(range(min = i32::MIN, max = i32::MAX))]
    pub priority: i32,
    /// Ordered targets; the first is used, later ones are fallbacks.
    #[x_kube(validation = Rule::new("size(self) > 0").message("needs at least one target"))]
    #[schemars(length(max = bounds::ROUTE_TARGETS), extend("x-kubernetes-list-type" = "atomic"))]
    pub targets: Vec<RouteTarget>,
}

fn default_priority() -> i32 {
    100
}

/// One target of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTarget {
    /// The ModelProvider's name.
    #[schemars(length(max = bounds::NAME))]
    pub provider: String,
    /// The upstream model id; absent keeps the requested name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::MODEL))]
    pub model: Option<String>,
}

/// The status of resources that only report readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the resource is in the compiled policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::CONDITIONS), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
