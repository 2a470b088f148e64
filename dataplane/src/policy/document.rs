//! The policy document: the one contract between the operator (writer) and the proxy (reader).
//!
//! It holds no secret values: virtual keys appear only as SHA-256 hashes, provider
//! credentials only as file paths or environment variable names. The JSON Schema in
//! `dataplane/schema/policy.schema.json` is generated from these types
//! (`tollgate-proxy schema`), and a test fails when the two drift apart.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pricing::PriceEntry;

/// The only document version this proxy understands.
pub const POLICY_VERSION: u32 = 1;

/// A complete policy document, or one shard of it (a directory may hold several files whose
/// lists are concatenated; see [`crate::policy::load`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Document format version; must be 1.
    pub version: u32,
    /// The organization: the top budget scope. At most one shard may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<Organization>,
    /// Teams: groups of users and keys that form a budget scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<Team>,
    /// Virtual keys the agents authenticate with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<VirtualKey>,
    /// Spend ceilings per scope and period (enforced by the ledger).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    /// Model providers the proxy forwards to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    /// Model names and tier aliases mapped to provider targets, matched in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Price overrides in LiteLLM's `model_prices_and_context_window.json` shape (USD per
    /// token); they win over the price table file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, PriceEntry>,
    /// Upstream MCP servers the gateway aggregates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServer>,
    /// Sidecar mode: the id of a `tollgate` provider (the gateway) that `/mcp` is relayed to,
    /// after the key is authenticated locally. The gateway aggregates and filters the MCP
    /// servers, so `mcp_servers` must then be empty. At most one shard may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_gateway: Option<String>,
    /// Audit settings. At most one shard may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditConfig>,
    /// How budgets and rate limits are enforced. At most one shard may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsConfig>,
}

/// Enforcement settings for budgets and rate limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// What to do when the shared ledger (Redis) cannot be reached.
    #[serde(default)]
    pub on_ledger_unavailable: LedgerFailureMode,
    /// Output tokens reserved per request at most: the estimate uses
    /// `min(max_tokens, this)`. Absent: 16384.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_output_tokens_cap: Option<u64>,
}

/// Behaviour when the shared ledger is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LedgerFailureMode {
    /// Refuse requests that a budget or rate limit applies to, with 503.
    #[default]
    FailClosed,
    /// Admit them against this replica's own in-memory counters until the ledger is back.
    FailOpenWithLocalLimits,
}

/// The organization every team and key belongs to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    /// Organization name, used as the organization budget scope's name.
    pub name: String,
}

/// A team: keys name it; budgets and rate limits can apply to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Team {
    /// Team id, unique in the document.
    pub id: String,
    /// Rate limits shared by every key of the team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
    /// Model access applied on top of each member key's own (deny wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelAccess>,
    /// MCP grants every member key inherits: a server granted here or on the key is granted,
    /// and a tool must pass every grant for its server, the team's and the key's (deny wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<McpGrant>,
    /// Built-in tool policy applied on top of each member key's own: a tool removed by either
    /// is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<PatternList>,
}

/// A virtual key: what an engineer's agent presents instead of a provider key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualKey {
    /// Key id, unique in the document; appears in logs, metrics and audit records.
    pub id: String,
    /// Lower-case hex SHA-256 of the secret key (64 characters). Never the key itself.
    pub sha256: String,
    /// The engineer who owns the key (a user budget scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The team the key belongs to; must name a team in `teams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// A disabled key is refused with 403.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// RFC 3339 instant after which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<jiff::Timestamp>,
    /// Which requested model names (exact or glob with `*` and `?`) the key may use.
    #[serde(default)]
    pub models: ModelAccess,
    /// Per-key rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
    /// MCP tools the key may call, per upstream MCP server; servers not listed are denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<McpGrant>,
    /// Policy for the agent's own built-in tools (e.g. `Bash`, `Write`): tools whose names
    /// it does not permit are removed from `/v1/messages` requests before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<PatternList>,
    /// Audit content capture for this key's requests; defaults to the audit setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureMode>,
}

fn default_true() -> bool {
    true
}

/// Allow and deny patterns for model names. An empty `allow` allows every routed model;
/// `deny` always wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelAccess {
    /// Exact names or globs (`*` any run, `?` one character).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Exact names or globs; a match refuses the model even when `allow` matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// A generic allow/deny glob list (deny wins, empty allow allows all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternList {
    /// Globs of allowed names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Globs of denied names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Rate limits; each absent field means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u64>,
}

/// MCP tools a key may use on one upstream MCP server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpGrant {
    /// The `mcp_servers[].name` this grant applies to.
    pub server: String,
    /// Tool name globs allowed (empty: all); deny wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Tool name globs denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// How much request and response content audit records carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Identity, model, tokens and cost only.
    #[default]
    None,
    /// Adds request metadata (tool names, sizes, headers of interest).
    Metadata,
    /// Adds prompts and completions, within size limits.
    Full,
}

/// A spend ceiling on one scope for one period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Budget id, unique in the document.
    pub id: String,
    /// What the budget applies to.
    pub scope: BudgetScope,
    /// The ceiling in integer micro-USD (1 USD = 1,000,000).
    pub limit_micro_usd: u64,
    /// The window the ceiling applies to.
    pub period: BudgetPeriod,
    /// IANA time zone the calendar periods align to; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Percentages of the limit that raise an alert when crossed (e.g. 50, 80, 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<u8>,
}

/// The subject of a budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetScope {
    /// organization, team, user or key.
    pub kind: ScopeKind,
    /// The organization name, team id, user name or key id.
    pub name: String,
}

/// Budget scope kinds, from widest to narrowest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// The whole organization.
    #[default]
    Organization,
    /// One team.
    Team,
    /// One engineer (every key they own).
    User,
    /// One virtual key.
    Key,
}

/// A budget period: a calendar window or a rolling duration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// Resets at midnight.
    #[default]
    Daily,
    /// Resets at midnight between Sunday and Monday.
    Weekly,
    /// Resets at midnight on the first of the month.
    Monthly,
    /// Resets at midnight on January 1.
    Yearly,
    /// A rolling window of this many seconds.
    Rolling {
        /// Window length in seconds.
        seconds: u64,
    },
}

/// A model provider the proxy forwards to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Provider id, unique in the document; routes name it.
    pub id: String,
    /// Which API the provider speaks.
    pub kind: ProviderKind,
    /// Base URL, e.g. `https://api.anthropic.com` (http:// only for loopback tests, or a
    /// `tollgate` gateway reached over the cluster network). Optional for `bedrock`
    /// (`https://bedrock-runtime.{region}.amazonaws.com`) and `vertex`
    /// (`https://{region}-aiplatform.googleapis.com`, or `https://aiplatform.googleapis.com`
    /// for region `global`); required for every other kind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Cloud region: required for `bedrock` (`us-east-1`) and `vertex` (`us-east5`, `global`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Cloud project: required for `vertex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// A single secret credential, read from a file or an environment variable (never the
    /// value): the `x-api-key` of `anthropic`, the `api-key` of `foundry`, a Bedrock API key
    /// (sent as a Bearer token) for `bedrock`, a static OAuth2 access token for `vertex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialSource>,
    /// AWS credentials of a `bedrock` provider. Without it (and without `credential`), the
    /// standard AWS environment chain is used: `AWS_ACCESS_KEY_ID`..., then web identity
    /// (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`: EKS IRSA), then container credentials
    /// (`AWS_CONTAINER_CREDENTIALS_FULL_URI`: EKS Pod Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsCredentials>,
    /// Google credentials of a `vertex` provider. Without it (and without `credential`),
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata
    /// server (GKE Workload Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpCredentials>,
    /// Microsoft Entra ID credentials of a `foundry` provider (a Bearer token); without it,
    /// `credential` is the `api-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureCredentials>,
    /// How many requests may fall back from this provider to the route's next target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Timeouts for calls to this provider.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// AWS credentials: exactly one of static keys, web identity or container credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentials {
    /// Static access key id (with `secret_access_key`), e.g. from a mounted Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<CredentialSource>,
    /// Static secret access key (with `access_key_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<CredentialSource>,
    /// Session token of temporary static keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<CredentialSource>,
    /// Web identity federation (EKS IRSA): STS `AssumeRoleWithWebIdentity`, refreshed before
    /// the credentials expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity: Option<AwsWebIdentity>,
    /// Container credentials (EKS Pod Identity, ECS): an HTTP endpoint issuing temporary keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<AwsContainerCredentials>,
}

/// STS web identity federation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsWebIdentity {
    /// The role to assume (`arn:aws:iam::123456789012:role/tollgate`).
    pub role_arn: String,
    /// The projected service-account token file (re-read on every refresh).
    pub token_file: String,
    /// Role session name (default `tollgate-proxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// STS endpoint (default `https://sts.{region}.amazonaws.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
}

/// Container credentials endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsContainerCredentials {
    /// The endpoint (EKS Pod Identity: `http://169.254.170.23/v1/credentials`).
    pub uri: String,
    /// File holding the authorization token sent to it (re-read on every refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// Google credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcpCredentials {
    /// A service-account JSON key (a mounted Secret); access tokens are minted from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_key: Option<CredentialSource>,
}

/// Microsoft Entra ID credentials: a client secret, else workload identity (a federated
/// token file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureCredentials {
    /// Directory (tenant) id; default `AZURE_TENANT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Application (client) id; default `AZURE_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Client secret; without it, workload identity is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<CredentialSource>,
    /// Federated token file of workload identity; default `AZURE_FEDERATED_TOKEN_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_token_file: Option<String>,
    /// Entra authority (default `AZURE_AUTHORITY_HOST`, else `https://login.microsoftonline.com/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_host: Option<String>,
}

/// The share of a provider's requests that may fall back to the next target: a token bucket
/// that every request sent to the provider fills by `percent`/100 and every fallback from it
/// drains by 1, plus `min_per_second` fallbacks always allowed. Without it: 20% and 5/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Fallbacks allowed per 100 requests (0 to 100).
    pub percent: u32,
    /// Fallbacks always allowed per second, whatever the traffic.
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            percent: 20,
            min_per_second: 5,
        }
    }
}

/// Provider API kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// The Anthropic Messages API.
    #[default]
    Anthropic,
    /// AWS Bedrock InvokeModel.
    Bedrock,
    /// Google Vertex AI rawPredict.
    Vertex,
    /// Azure AI Foundry.
    Foundry,
    /// The OpenAI API or an OpenAI-compatible one (vLLM, Azure OpenAI's v1 API, ...):
    /// Responses and Chat Completions, `Authorization: Bearer <credential>`; `endpoint` is the
    /// base URL without `/v1` (e.g. `https://api.openai.com`).
    Openai,
    /// The Gemini API (`generativelanguage.googleapis.com`): generateContent,
    /// streamGenerateContent and countTokens, `x-goog-api-key: <credential>`.
    Gemini,
    /// Another tollgate-proxy (the gateway a credential-free sidecar forwards to): the endpoint
    /// is its base URL, e.g. `http://tollgate-gateway.tollgate-system.svc:8080`. It takes no
    /// credential: the client's own virtual key is forwarded, and the gateway authenticates it
    /// again. Its answers, refusals included, reach the client unchanged and are final.
    Tollgate,
}

/// A reference to a secret value: a mounted file or an environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialSource {
    /// Path of a file holding the secret (a mounted Secret); surrounding whitespace is trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Name of an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// Provider call timeouts, in milliseconds (connecting is bounded by the response-headers
/// timeout and by the proxy's global 10 s connect timeout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Time allowed until the response headers arrive.
    #[serde(default = "default_headers_ms")]
    pub response_headers_ms: u64,
    /// Longest silence allowed inside a streamed body.
    #[serde(default = "default_idle_ms")]
    pub stream_idle_ms: u64,
}

fn default_headers_ms() -> u64 {
    600_000
}
fn default_idle_ms() -> u64 {
    300_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            response_headers_ms: default_headers_ms(),
            stream_idle_ms: default_idle_ms(),
        }
    }
}

/// Maps requested model names (exact, a tier alias, or a glob) to provider targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The requested model name this route serves: exact (`gw-opus`) or a glob (`claude-*`).
    #[serde(rename = "match")]
    pub match_: String,
    /// Ordered targets; the first is used, later ones are fallbacks.
    pub targets: Vec<RouteTarget>,
}

/// One provider target of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    /// The `providers[].id` to forward to.
    pub provider: String,
    /// The upstream model id; absent keeps the requested name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Targets are tried by ascending priority (default: the target's position in the list,
    /// so a plain list is an ordered fallback chain). Targets of equal priority share the
    /// load by `weight`, and the others of the group are the next fallbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Relative share of the load among targets of equal priority (1 to 10000, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// An upstream MCP server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Server name; tools are exposed as `<name>__<tool>`.
    pub name: String,
    /// Streamable HTTP endpoint URL.
    pub url: String,
    /// Credential sent upstream as a Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialSource>,
}

/// Audit settings. The spool directory itself is per process (`tollgate-proxy --audit-dir`);
/// everything else here applies on reload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Default content capture for keys that do not set their own.
    #[serde(default)]
    pub capture: CaptureMode,
    /// Largest captured prompt or completion, in bytes, under `full` capture (longer content is
    /// cut and marked truncated). Absent: 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_max_bytes: Option<u64>,
    /// Where records are shipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<AuditSink>,
    /// The local spool: durability, rotation and retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<AuditSpool>,
    /// Signed checkpoints, which make truncation and wholesale rewrites of the chain detectable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<AuditCheckpoint>,
}

/// One audit sink.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSink {
    /// Sink name, unique in the document (letters, digits, `-`, `_`); its acknowledged offset
    /// is kept under this name in the spool.
    pub name: String,
    /// webhook, elasticsearch, splunk, datadog, s3 or file.
    pub kind: String,
    /// Endpoint URL (or file path for `file`). Elasticsearch/OpenSearch, Splunk and Datadog:
    /// the base URL (`/_bulk`, `/services/collector/event` and `/api/v2/logs` are appended);
    /// S3: the service endpoint, e.g. `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    /// Sink credential: webhook HMAC signing secret, Elasticsearch API key, Splunk HEC token,
    /// Datadog API key, S3 secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialSource>,
    /// S3 access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<CredentialSource>,
    /// Elasticsearch index (default `tollgate-audit`) or Splunk index (default: the token's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// S3 region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 object key prefix (default `tollgate-audit/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Splunk sourcetype (default `tollgate:audit`), Datadog `ddsource` (default `tollgate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Batching.
    #[serde(default)]
    pub batch: AuditBatch,
    /// Retries (a sink retries a batch until it is accepted: at-least-once).
    #[serde(default)]
    pub retry: AuditRetry,
}

/// How a sink batches records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditBatch {
    /// Most records per request.
    #[serde(default = "default_batch_records")]
    pub max_records: u64,
    /// Most encoded bytes per request (a single larger record is still sent alone).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: u64,
    /// Longest a record waits for its batch to fill, in milliseconds.
    #[serde(default = "default_batch_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_batch_records() -> u64 {
    500
}
fn default_batch_bytes() -> u64 {
    4 << 20
}
fn default_batch_wait_ms() -> u64 {
    1000
}

impl Default for AuditBatch {
    fn default() -> Self {
        Self {
            max_records: default_batch_records(),
            max_bytes: default_batch_bytes(),
            max_wait_ms: default_batch_wait_ms(),
        }
    }
}

/// Retry backoff of a sink: exponential from `initial_backoff_ms` to `max_backoff_ms`, each
/// delay drawn uniformly from its upper half (jitter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRetry {
    /// First delay after a failure.
    #[serde(default = "default_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest delay.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Timeout of one delivery attempt.
    #[serde(default = "default_sink_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_sink_timeout_ms() -> u64 {
    30_000
}

impl Default for AuditRetry {
    fn default() -> Self {
        Self {
            initial_backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            timeout_ms: default_sink_timeout_ms(),
        }
    }
}

/// When the spool writer calls fsync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every batch the writer appends (group commit): nothing acknowledged to a sink or
    /// counted as spooled can be lost to a power failure.
    #[default]
    EveryBatch,
    /// At most once per `fsync_interval_ms`; a power failure may lose that much.
    Interval,
    /// Never (the OS decides); a process crash loses nothing, a power failure may.
    Never,
}

/// The local spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSpool {
    /// When to fsync.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Interval for `fsync: interval`.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// A segment is closed once it holds this many bytes.
    #[serde(default = "default_segment_bytes")]
    pub segment_max_bytes: u64,
    /// A segment is closed once it is this old, in seconds.
    #[serde(default = "default_segment_age")]
    pub segment_max_age_secs: u64,
    /// Closed segments every sink has acknowledged are deleted after this many seconds.
    #[serde(default = "default_retention_secs")]
    pub retention_secs: u64,
    /// Hard cap on the spool's size: past it, the oldest closed segments are deleted even if a
    /// sink has not shipped them (logged and counted as dropped).
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Records waiting between the request path and the writer; when full, records are
    /// dropped, counted and logged (the request is never blocked). Applies at start.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: u64,
}

fn default_fsync_interval_ms() -> u64 {
    1000
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_segment_age() -> u64 {
    3600
}
fn default_retention_secs() -> u64 {
    7 * 24 * 3600
}
fn default_spool_max_bytes() -> u64 {
    10 << 30
}
fn default_queue_capacity() -> u64 {
    65_536
}

impl Default for AuditSpool {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::default(),
            fsync_interval_ms: default_fsync_interval_ms(),
            segment_max_bytes: default_segment_bytes(),
            segment_max_age_secs: default_segment_age(),
            retention_secs: default_retention_secs(),
            max_bytes: default_spool_max_bytes(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

/// Checkpoint signature algorithms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointAlgorithm {
    /// HMAC-SHA256; the key file holds the shared secret (verifiers need it too).
    #[default]
    HmacSha256,
    /// Ed25519; the key file holds the 32-byte seed in hex (verifiers need only the public key).
    Ed25519,
}

/// Signed checkpoints of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    /// Signature algorithm.
    #[serde(default)]
    pub algorithm: CheckpointAlgorithm,
    /// Where the signing key is read from (a mounted Secret); never the key itself.
    pub key: CredentialSource,
    /// A checkpoint after at most this many records.
    #[serde(default = "default_checkpoint_records")]
    pub every_records: u64,
    /// A checkpoint at least this often while records arrive, in seconds.
    #[serde(default = "default_checkpoint_secs")]
    pub every_secs: u64,
}

fn default_checkpoint_records() -> u64 {
    1000
}
fn default_checkpoint_secs() -> u64 {
    60
}
