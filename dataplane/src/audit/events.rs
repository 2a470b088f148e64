//! What the request path hands the audit trail: an [`Event`] with a typed body per kind.
//! The writer turns it into a sealed [`super::Record`].
//!
//! Every value a client chooses (a header, the path, a tool name) is cut to
//! [`FIELD_MAX_CHARS`] characters with [`clip`] before it reaches a body, so a record's size
//! is bounded by the policy, never by a request.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Longest value, in characters, of a record field a client chooses (a header, a session
/// id, a tool name); longer values are cut and end with [`ELISION`].
pub const FIELD_MAX_CHARS: usize = 256;

/// Longest refusal message, in characters (it may quote the path or a model name).
pub const MESSAGE_MAX_CHARS: usize = 1024;

/// The mark a cut value ends with.
pub const ELISION: char = '\u{2026}';

/// `s` when it has at most `max` characters, else its first `max` characters and [`ELISION`].
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((end, _)) => {
            let mut out = String::with_capacity(end + ELISION.len_utf8());
            out.push_str(&s[..end]);
            out.push(ELISION);
            out
        }
    }
}

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

/// Body of an `mcp_tool_call` record: one `tools/call` through the MCP gateway, allowed or
/// not. `session_id` is the gateway's MCP session.
#[derive(Debug, Clone, Serialize)]
pub struct McpToolCall {
    /// Who.
    #[serde(flatten)]
    pub identity: Identity,
    /// Upstream MCP server name (empty when the name matched no server).
    pub server: String,
    /// Tool name as the upstream knows it (cut to [`FIELD_MAX_CHARS`]).
    pub tool: String,
    /// Whether the policy let the call through to the upstream.
    pub allowed: bool,
    /// `ok`, `tool_error`, `upstream_error`, `unavailable`, `denied` or `unknown` (as the
    /// `tollgate_mcp_tool_calls_total` metric).
    pub outcome: &'static str,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the upstream took, for calls that reached it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Body of a `gap` record: records that should be in the chain and are not, sealed into the
/// chain as soon as it can be written, so the loss is itself on the record.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// `retention` (the spool's size cap deleted segments a sink had not shipped),
    /// `queue_full` (the writer fell behind) or `spool_unwritable` (the disk refused writes,
    /// e.g. full, past the writer's bounded buffer).
    pub reason: &'static str,
    /// How many records.
    pub records: u64,
    /// For `retention`: the first deleted sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// For `retention`: the last deleted sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// For `retention`: the sinks that had not shipped them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<String>,
    /// For lost events: when the first one happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// For lost events: when the last one happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// Body of a `denials_suppressed` record: refusals of unauthenticated requests beyond the
/// rate the trail records individually, counted by reason.
#[derive(Debug, Clone, Serialize)]
pub struct DenialsSuppressed {
    /// How many refusals were not recorded individually.
    pub suppressed: u64,
    /// The same, by denial reason.
    pub reasons: BTreeMap<&'static str, u64>,
    /// When the first of them happened.
    pub since: String,
    /// When the last of them happened.
    pub until: String,
}
