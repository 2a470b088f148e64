//! Size bounds on every string, list and map the CRDs declare.
//!
//! kube-apiserver estimates the worst-case cost of each `x-kubernetes-validations` rule when a
//! CRD is created, and refuses the CRD when a rule (times the cardinality of the lists around
//! it) could cost more than 10,000,000 units or all rules together more than 100,000,000. A
//! string without `maxLength`, a list without `maxItems` or a map without `maxProperties` is
//! costed as if it filled a whole 3 MiB request, so every variable-size field carries a bound
//! chosen from its domain here. `operator/tests/crd_admission` fails on a field without one and
//! re-estimates every rule with the Kubernetes cost model.

/// A Kubernetes object name (DNS-1123 subdomain): Secrets, Teams, McpServers, providers.
pub const NAME: u32 = 253;
/// A namespace name (DNS-1123 label).
pub const NAMESPACE: u32 = 63;
/// A key inside a Secret's data (the API server allows 253).
pub const SECRET_KEY: u32 = 253;
/// An environment variable name.
pub const ENV_NAME: u32 = 256;
/// An engineer's identity: an e-mail address is at most 320 characters (RFC 3696 errata).
pub const OWNER: u32 = 320;
/// One model or tool name glob.
pub const PATTERN: u32 = 256;
/// Globs in one allow or deny list.
pub const PATTERNS: u32 = 64;
/// MCP servers granted to one key or team.
pub const MCP_GRANTS: u32 = 32;
/// A label key: an optional DNS-subdomain prefix (253), `/`, and a name (63).
pub const LABEL_KEY: u32 = 317;
/// A label value.
pub const LABEL_VALUE: u32 = 63;
/// `matchLabels` pairs, or `matchExpressions` requirements, of one selector.
pub const SELECTOR_TERMS: u32 = 16;
/// Values of one `In` or `NotIn` requirement.
pub const SELECTOR_VALUES: u32 = 64;
/// An S3 bucket name (3 to 63 characters).
pub const BUCKET: u32 = 63;
/// An S3 object key prefix (object keys are at most 1,024 bytes).
pub const OBJECT_PREFIX: u32 = 1024;
/// An Elasticsearch or Splunk index name (Elasticsearch allows 255 bytes).
pub const INDEX: u32 = 255;
/// A Splunk sourcetype or Datadog source.
pub const SOURCE: u32 = 256;
/// Alert thresholds of one budget.
pub const THRESHOLDS: u32 = 10;
/// Notification targets of one budget.
pub const NOTIFY_TARGETS: u32 = 8;
/// Notification records in one budget's status: one per threshold of the current window.
pub const NOTIFICATIONS: u32 = THRESHOLDS;
/// A notification target id in a record, e.g. `webhook/3` or `default/slack`.
pub const TARGET_ID: u32 = 32;
/// A replica (pod) name in a notification record.
pub const INSTANCE: u32 = 253;
/// The last delivery error kept in a notification record.
pub const NOTIFY_ERROR: u32 = 1024;
/// A URL (the common browser and proxy limit).
pub const URL: u32 = 2048;
/// A requested or upstream model id (Bedrock ARNs included).
pub const MODEL: u32 = 256;
/// Targets of one route: the primary and its fallbacks.
pub const ROUTE_TARGETS: u32 = 16;
/// A cloud region or project id.
pub const CLOUD_ID: u32 = 128;
/// A provider's cloud region or project: a DNS label, as it becomes part of a host name.
pub const CLOUD_LABEL: u32 = 63;
/// An AWS ARN (IAM allows 2,048 characters).
pub const ARN: u32 = 2048;
/// A file path in the proxy's container (Linux `PATH_MAX`).
pub const FILE_PATH: u32 = 4096;
/// An AWS STS role session name (2 to 64 characters).
pub const AWS_SESSION_NAME: u32 = 64;
/// A Microsoft Entra tenant id (a GUID or a domain name) or application (client) id.
pub const ENTRA_ID: u32 = 253;
/// An IANA time zone name (the longest today has 30 characters).
pub const TIME_ZONE: u32 = 64;
/// A US-dollar decimal string: 12 integer digits, a point and 6 decimals.
pub const DECIMAL: u32 = 32;
/// An RFC 3339 timestamp.
pub const TIMESTAMP: u32 = 64;
/// A key id `<namespace>/<name>`.
pub const KEY_ID: u32 = NAMESPACE + 1 + NAME;
/// Conditions on one status (as many as `metav1.Condition` lists usually hold).
pub const CONDITIONS: u32 = 32;
/// `metav1.Condition.type`.
pub const CONDITION_TYPE: u32 = 316;
/// `metav1.Condition.reason`.
pub const CONDITION_REASON: u32 = 1024;
/// `metav1.Condition.message`.
pub const CONDITION_MESSAGE: u32 = 32768;
