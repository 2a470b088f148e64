//! `McpServer`: an upstream MCP server the gateway aggregates.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::bounds;

use super::common::CredentialRef;
use super::provider::ResourceStatus;

/// An MCP server. Cluster-scoped; its name prefixes its tools (`<name>__<tool>`).
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "McpServer",
    doc = "An upstream MCP server the gateway aggregates.",
    plural = "mcpservers",
    shortname = "tgmcp",
    category = "tollgate",
    status = "ResourceStatus",
    validation = Rule::new("size(self.metadata.name) <= 48").message("name must be at most 48 characters (it prefixes tool names)"),
    validation = Rule::new("!self.metadata.name.contains('.')").message("name must not contain '.' (it prefixes tool names: letters, digits and '-' only)"),
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct McpServerSpec {
    /// Streamable HTTP endpoint URL.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http(s) URL"))]
    #[schemars(length(max = bounds::URL))]
    pub url: String,
    /// Credential sent upstream as a Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
}
