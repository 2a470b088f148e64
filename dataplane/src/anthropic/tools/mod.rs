//! The built-in tool policy: per virtual key (and team), `tools` allow/deny globs decide which
//! tools a `/v1/messages` (or count_tokens) request may offer the model, and which tool calls
//! the gateway lets back.
//!
//! **Policy names.** Every tool the model can be offered is judged by name (deny wins; an
//! empty allow list permits everything not denied):
//! - a tool the client defines (no `type`, or `custom`): its `name`, as the client declares it
//!   (Claude Code: `Bash`, `Write`, `mcp__<server>__<tool>`, ...);
//! - a tool Anthropic defines, by its `type`, client-run (`bash_20250124`,
//!   `text_editor_20250728`, `computer_20251124`, `memory_20250818`) or run by Anthropic
//!   (`web_search_*`, `web_fetch_*`, `code_execution_*`, `tool_search_tool_*`, `advisor_*`,
//!   and any type not known yet): its type family, the type without its `_YYYYMMDD` version
//!   (`web_search`, `code_execution`, `bash`, `text_editor`, ...), *and* its `name` when that
//!   differs (`str_replace_based_edit_tool`): it stays only if the policy permits both;
//! - a tool of a remote MCP server that Anthropic calls (the MCP connector: `mcp_servers` and
//!   `mcp_toolset`): `mcp_connector__<host[:port]/path>__<tool>`, named after the server's
//!   URL, not after the `name` the request gives it (a request names its servers freely, so
//!   a name proves nothing; `mcp__...` stays the namespace of the agent's own MCP tools).
//!
//! **What it does.** See [`request`]: tools the policy does not permit are cut out of the
//! `tools` array by splicing bytes (everything else reaches the provider byte for byte); a
//! `tool_choice` naming a removed tool is refused (400). An MCP connector request is refused
//! (403) unless the policy permits every tool it can expose: all of a server's tools (the
//! gateway cannot list them) unless its `mcp_toolset` enables only named ones. Requests the
//! gateway cannot judge while a policy applies (unparseable, a tool without a name, a
//! connector server that is not an `https` URL) are refused rather than forwarded unfiltered.
//! `anthropic-beta` headers are forwarded verbatim and never judged: a beta only lets the API
//! accept the fields that turn a feature on, and those fields are judged, with or without
//! (and whatever the version of) the beta. As defence in depth, see [`response`]: a response
//! block calling a tool the policy does not permit (`tool_use`, `server_tool_use`,
//! `mcp_tool_use`) ends an SSE stream with an `error` event in place of that block, and turns
//! a JSON response into a 403, so the agent never receives the call.
//!
//! **What it does not guarantee.** It governs what the *model* is offered and what the
//! gateway lets back; it is not a sandbox. The agent runs client tools on the engineer's
//! machine: a modified client can still run anything locally, and a permitted tool (an MCP
//! tool, or `Bash` when only `Write` is removed) can reach the same effect as a removed one.
//! Server tools and connector tools run at Anthropic during the response: the response guard
//! keeps their calls and results from the agent but cannot undo a call already made, so the
//! request check is the control that counts for them. Earlier turns in `messages` that
//! already hold tool calls are left as they are, and text the model writes is not inspected.
//! Request fields the gateway does not know that might turn on new capabilities are not
//! judged.

pub mod request;
pub mod response;

use std::sync::Arc;

use bytes::Bytes;

use crate::denial::Denial;
use crate::policy::KeyEntry;
use crate::policy::glob::AllowDeny;

pub use request::{Filtered, Refused, filter_tools};
pub use response::{StreamCheck, ToolGuard, Verdict};

/// Start of the policy names of MCP connector tools: `mcp_connector__<host/path>__<tool>`.
pub const CONNECTOR_PREFIX: &str = "mcp_connector__";

/// What the filter and the guard ask of a tool policy.
pub trait ToolJudge: Send + Sync {
    /// Whether the tool of this policy name is permitted.
    fn permits(&self, name: &str) -> bool;
    /// Whether every policy name starting with `prefix` is permitted.
    fn permits_every_name_with_prefix(&self, prefix: &str) -> bool;
}

impl ToolJudge for KeyEntry {
    fn permits(&self, name: &str) -> bool {
        self.keeps_tool(name)
    }

    fn permits_every_name_with_prefix(&self, prefix: &str) -> bool {
        self.keeps_every_tool_with_prefix(prefix)
    }
}

impl ToolJudge for AllowDeny {
    fn permits(&self, name: &str) -> bool {
        AllowDeny::permits(self, name)
    }

    fn permits_every_name_with_prefix(&self, prefix: &str) -> bool {
        AllowDeny::permits_every_name_with_prefix(self, prefix)
    }
}

/// The policy family of an Anthropic-defined tool type: the type without its `_YYYYMMDD`
/// version (`web_search_20250305` -> `web_search`); a type without a version is its own.
pub fn type_family(kind: &str) -> &str {
    match kind.rsplit_once('_') {
        Some((family, date))
            if !family.is_empty() && date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) =>
        {
            family
        }
        _ => kind,
    }
}

/// The policy name of the tool a `server_tool_use` block calls: the code execution tool
/// calls its own sub-tools (`bash_code_execution`, `text_editor_code_execution`), which are
/// the `code_execution` tool for the policy; other server tools call themselves.
pub fn server_tool_family(name: &str) -> &str {
    match name {
        "bash_code_execution" | "text_editor_code_execution" => "code_execution",
        other => other,
    }
}

/// Where an MCP connector server lives, for its policy names: `host[:port]/path` of its
/// `https` URL (no scheme, credentials, query or fragment). The error says why it cannot be
/// judged.
pub fn connector_location(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if parsed.scheme() != "https" {
        return Err("not an https URL (the MCP connector requires https)".into());
    }
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or("no host")?;
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{host}{port}{}", parsed.path()))
}

/// The start of the policy names of the tools of the MCP connector server at `location`.
pub fn connector_prefix(location: &str) -> String {
    format!("{CONNECTOR_PREFIX}{location}__")
}

/// Applies the key's tool policy to a Messages body. Returns the body to forward and, when a
/// tool policy applies, the guard for the response. Bodies without a policy pass through
/// untouched (not even parsed).
pub fn filter_request(key: &Arc<KeyEntry>, body: Bytes) -> Result<(Bytes, Option<ToolGuard>), Denial> {
    if !key.has_tool_policy() {
        return Ok((body, None));
    }
    let filtered = filter_tools(&body, key.as_ref()).map_err(|r| match r {
        Refused::Invalid(detail) => Denial::InvalidRequest { detail },
        Refused::NotPermitted(what) => Denial::ToolNotAllowed {
            key: key.id.clone(),
            what,
        },
    })?;
    if !filtered.removed.is_empty() {
        tracing::info!(removed = ?filtered.removed, "tools removed by policy");
    }
    let guard = ToolGuard::new(key.clone(), key.id.clone(), filtered.connector, filtered.stream);
    Ok((filtered.body.unwrap_or(body), Some(guard)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_locations() {
        assert_eq!(type_family("web_search_20250305"), "web_search");
        assert_eq!(type_family("text_editor_20250728"), "text_editor");
        assert_eq!(
            type_family("tool_search_tool_regex_20251119"),
            "tool_search_tool_regex"
        );
        assert_eq!(type_family("mcp_toolset"), "mcp_toolset");
        assert_eq!(type_family("x_2025030"), "x_2025030");
        assert_eq!(type_family("_20250305"), "_20250305");
        assert_eq!(server_tool_family("bash_code_execution"), "code_execution");
        assert_eq!(server_tool_family("web_fetch"), "web_fetch");
        assert_eq!(
            connector_location("https://user:pw@MCP.Example.com:443/a/../sse?token=x#f").unwrap(),
            "mcp.example.com/sse"
        );
        assert_eq!(
            connector_location("https://attacker.example:8443").unwrap(),
            "attacker.example:8443/"
        );
        assert!(connector_location("http://mcp.example.com/").is_err());
        assert!(connector_location("not a url").is_err());
        assert_eq!(connector_prefix("h/p"), "mcp_connector__h/p__");
    }
}
