//! `Team`: a group of keys that forms a budget scope and shares model access and rate limits.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::bounds;

use super::common::{Condition, ModelAccess, RateLimits};

/// A team. Cluster-scoped: its name is the team id keys and budgets refer to.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Team",
    doc = "A team of virtual keys: a budget scope with shared model access and rate limits.",
    plural = "teams",
    shortname = "tgteam",
    category = "tollgate",
    status = "TeamStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Keys","type":"integer","jsonPath":".status.keys"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TeamSpec {
    /// Model access applied on top of each member key's own (deny wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelAccess>,
    /// Rate limits shared by every key of the team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
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
