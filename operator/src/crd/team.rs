//! `Team`: a group of keys that forms a budget scope and shares model access, rate limits and
//! tool grants, and says which namespaces may hold its keys.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::bounds;

use super::common::{Condition, LabelSelector, McpGrant, ModelAccess, PatternList, RateLimits};

/// A team. Cluster-scoped: its name is the team id keys and budgets refer to.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Team",
    doc = "A team of virtual keys: a budget scope with shared model access, rate limits and tool grants, held only in the namespaces it admits.",
    plural = "teams",
    shortname = "tgteam",
    category = "tollgate",
    status = "TeamStatus",
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.allowedNamespaces.from"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Keys","type":"integer","jsonPath":".status.keys"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mcp.all(g, self.mcp.exists_one(h, h.server == g.server))").message("each MCP server may be granted once"))]
pub struct TeamSpec {
    /// The namespaces whose VirtualKeys may name this team. Absent: none (a key naming the
    /// team is refused with `NamespaceNotAllowed`), so a tenant cannot join a team, and take
    /// its grants or spend its budget, from a namespace the team did not admit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
    /// Model access applied on top of each member key's own (deny wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelAccess>,
    /// Rate limits shared by every key of the team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
    /// MCP tools every key of the team may call, per McpServer: a server granted here or on
    /// the key is granted, and a tool must pass every grant for its server, the team's and the
    /// key's (deny wins).
    #[serde(default)]
    #[schemars(length(max = bounds::MCP_GRANTS), extend("x-kubernetes-list-type" = "atomic"))]
    pub mcp: Vec<McpGrant>,
    /// Policy for the agent's built-in tools (e.g. `Bash`, `Write`), applied on top of each
    /// member key's own: a tool removed by either is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<PatternList>,
}

/// Which namespaces may hold a team's keys (after Gateway API's `allowedRoutes.namespaces`;
/// there is no `Same`, a Team being cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.from == 'Selector' ? has(self.selector) : !has(self.selector)").message("selector is required with from: Selector and only allowed with it"))]
pub struct AllowedNamespaces {
    /// `All` namespaces, or those matching `selector` (`Selector`).
    pub from: NamespacesFrom,
    /// Namespace labels, for `from: Selector`. Every namespace carries
    /// `kubernetes.io/metadata.name: <name>`, so namespaces can be listed by name with
    /// `matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [...]}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Where [`AllowedNamespaces`] admits keys from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum NamespacesFrom {
    /// Every namespace.
    All,
    /// The namespaces whose labels match the selector.
    #[default]
    Selector,
}

/// What the operator observed about a Team.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the team is in the compiled policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::CONDITIONS), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many compiled virtual keys belong to the team.
    #[serde(default)]
    pub keys: u64,
}
