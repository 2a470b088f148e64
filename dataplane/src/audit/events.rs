//! What the request path hands the audit trail: an [`Event`] with a typed body per kind.
//! The writer turns it into a sealed [`super::Record`].

use serde::Serialize;
use serde_json::Value;

/// An event waiting for its sequence number.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened.
    pub time: jiff::Timestamp,
    /// Record kind.
    pub kind: &'static str,
    /// Record body.
    pub body: Value,
}

impl Event {
    /// An event of `kind` happening now, with a serializable body.
    pub fn now(kind: &'static str, body: &impl Serialize) -> Event {
        Event {
            time: jiff::Timestamp::now(),
            kind,
            // Bodies are plain structs of strings and integers: serialization cannot fail.
            body: serde_json::to_value(body).unwrap_or(Value::Null),
        }
    }
}

/// Tokens by billing class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tokens {
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// 5-minute cache writes.
    pub cache_write_5m: u64,
    /// 1-hour cache writes.
    pub cache_write_1h: u64,
    /// Cache reads.
    pub cache_read: u64,
}

/// Who made a request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Identity {
    /// Gateway request id.
    pub request_id: String,
    /// Virtual key id (never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The key's owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The key's team.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Claude Code session id (`x-claude-code-session-id`), when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// Body of a `model_request` record: one exchange with a provider (a Messages request or a
/// token count).
#[derive(Debug, Clone, Serialize)]
pub struct ModelRequest {
    /// Who.
    #[serde(flatten)]
    pub identity: Identity,
    /// `messages` or `count_tokens`.
    pub endpoint: &'static str,
    /// Requested model name.
    pub model: String,
    /// Model id sent upstream.
    pub upstream_model: String,
    /// Provider id.
    pub provider: String,
    /// Upstream status; 0 when the client left before the upstream answered.
    pub status: u16,
    /// How the body ended (`ended`, `upstream_failed`, `idle_timeout`, `client_gone`).
    pub outcome: &'static str,
    /// Whether the response was complete.
    pub complete: bool,
    /// Tokens by class.
    pub tokens: Tokens,
    /// Whether the tokens are estimated: the response ended without its final usage and is
    /// charged by what it delivered (README, "Budgets and rate limits").
    pub usage_estimated: bool,
    /// Cost in micro-USD.
    pub cost_micro_usd: u64,
    /// From sending upstream to the end of the body.
    pub latency_ms: u64,
    /// From sending upstream to the first body byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    /// Content capture mode applied (`none`, `metadata`, `full`).
    pub capture: &'static str,
    /// Captured content (metadata or prompts and completions), per the capture mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
}

/// Body of a `denial` record: a request the gateway refused.
#[derive(Debug, Clone, Serialize)]
pub struct Denial {
    /// Who (as far as known when refused).
    #[serde(flatten)]
    pub identity: Identity,
    /// Machine-readable reason.
    pub reason: &'static str,
    /// HTTP status returned.
    pub status: u16,
    /// The message the client saw.
    pub message: String,
}

/// Body of a `policy_reload` record.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReload {
    /// `applied` or `rejected`.
    pub result: &'static str,
    /// Revision (SHA-256 of the sources) now live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why the new document was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Keys in the live policy.
    pub keys: u64,
}

/// Body of a `budget_threshold` record.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetThreshold {
    /// The request whose settlement crossed it.
    #[serde(flatten)]
    pub identity: Identity,
    /// Budget id.
    pub budget: String,
    /// Scope kind and name, e.g. `team 'platform'`.
    pub scope: String,
    /// Threshold percent crossed.
    pub threshold_percent: u8,
    /// Spend after the settlement.
    pub spent_micro_usd: u64,
    /// The budget's limit.
    pub limit_micro_usd: u64,
}

/// Body of an `mcp_tool_call` record (for the MCP gateway).
#[derive(Debug, Clone, Serialize)]
pub struct McpToolCall {
    /// Who.
    #[serde(flatten)]
    pub identity: Identity,
    /// Upstream MCP server name.
    pub server: String,
    /// Tool name.
    pub tool: String,
    /// Whether the call was allowed.
    pub allowed: bool,
    /// Why it was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
