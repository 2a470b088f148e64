//! `Budget`: a spend ceiling on a scope (organization, team, user or key) for a period.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::bounds;

use super::common::{Condition, CredentialRef};

/// A budget. Cluster-scoped; its name is the budget id the ledger reports spend under.
#[derive(CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Budget",
    doc = "A spend ceiling on an organization, team, user or key for a period; status shows spend from the ledger.",
    plural = "budgets",
    shortname = "tgbudget",
    category = "tollgate",
    status = "BudgetStatus",
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.scope.kind"}"#,
    printcolumn = r#"{"name":"Subject","type":"string","jsonPath":".spec.scope.name"}"#,
    printcolumn = r#"{"name":"Limit","type":"string","jsonPath":".status.limit"}"#,
    printcolumn = r#"{"name":"Spent","type":"string","jsonPath":".status.spent"}"#,
    printcolumn = r#"{"name":"Remaining","type":"string","jsonPath":".status.remaining"}"#,
    // A string, not a date: kubectl prints a date column in the future as `<invalid>`.
    printcolumn = r#"{"name":"Resets","type":"string","jsonPath":".status.resetsAt"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.limitUsd) != has(self.limitMicroUsd)").message("set exactly one of limitUsd or limitMicroUsd"))]
#[x_kube(validation = Rule::new("self.period == 'rolling' ? has(self.rollingSeconds) : !has(self.rollingSeconds)").message("rollingSeconds is required for period rolling and only allowed with it"))]
pub struct BudgetSpec {
    /// What the budget applies to.
    pub scope: BudgetScope,
    /// The ceiling in US dollars as a decimal string with at most 6 decimals, e.g. `"250.00"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,12}(\\\\.[0-9]{1,6})?$')").message("a decimal number of US dollars with at most 6 decimals, e.g. \"250.00\""))]
    #[schemars(length(max = bounds::DECIMAL))]
    pub limit_usd: Option<String>,
    /// The ceiling in integer micro-USD (1 USD = 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_micro_usd: Option<u64>,
    /// The window the ceiling applies to.
    pub period: Period,
    /// Window length in seconds, for `period: rolling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub rolling_seconds: Option<u64>,
    /// IANA time zone the calendar periods align to, e.g. `Europe/Paris`; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::TIME_ZONE))]
    pub time_zone: Option<String>,
    /// Percentages of the limit that raise an alert when crossed, e.g. `[50, 80, 100]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(t, t >= 1 && t <= 100)").message("thresholds are percentages from 1 to 100"))]
    #[schemars(length(max = bounds::THRESHOLDS), extend("x-kubernetes-list-type" = "atomic"))]
    pub thresholds: Vec<u8>,
    /// Where to send a notification when spend crosses a threshold (in addition to the
    /// Event on the Budget and the operator-wide defaults): a signed JSON webhook or a Slack
    /// incoming webhook. Each threshold notifies once per window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::NOTIFY_TARGETS), extend("x-kubernetes-list-type" = "atomic"))]
    pub notify: Vec<NotifyTarget>,
}

/// One notification target: set exactly one of `webhook` or `slack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.webhook) != has(self.slack)").message("set exactly one of webhook or slack"))]
pub struct NotifyTarget {
    /// A JSON POST signed with HMAC-SHA256 (header `x-tollgate-signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,
    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackTarget>,
}

/// A generic webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTarget {
    /// The URL notifications are POSTed to (`https://`, or `http://` inside the cluster).
    #[schemars(length(max = bounds::URL))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("an http:// or https:// URL"))]
    pub url: String,
    /// The HMAC-SHA256 signing secret: a key of a Secret in the operator's namespace labelled
    /// `tollgate.dev/credential=true`.
    #[x_kube(validation = Rule::new("has(self.secretKeyRef)").message("notification secrets come from a Secret (secretKeyRef)"))]
    pub secret: CredentialRef,
}

/// A Slack incoming webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackTarget {
    /// The incoming-webhook URL (it is the credential): a key of a Secret in the operator's
    /// namespace labelled `tollgate.dev/credential=true`.
    #[x_kube(validation = Rule::new("has(self.secretKeyRef)").message("notification secrets come from a Secret (secretKeyRef)"))]
    pub webhook_url: CredentialRef,
}

/// One threshold notification of one window: claimed by one operator replica through an
/// optimistic-concurrency write of the status, then delivered by that replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// Start of the window (RFC 3339, as the gateway reports it).
    #[schemars(length(max = bounds::TIMESTAMP))]
    pub window: String,
    /// The threshold crossed, percent.
    pub threshold: u8,
    /// When the notification was claimed (RFC 3339).
    #[schemars(length(max = bounds::TIMESTAMP))]
    pub claimed_at: String,
    /// The operator replica delivering it.
    #[schemars(length(max = bounds::INSTANCE))]
    pub claimed_by: String,
    /// Delivery attempts so far.
    #[serde(default)]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub attempts: u32,
    /// When the last attempt was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::TIMESTAMP))]
    pub last_attempt_at: Option<String>,
    /// Targets delivered to so far (`webhook/0`, `slack/1`, `default/webhook`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::NOTIFY_TARGETS + 2), inner(length(max = bounds::TARGET_ID)), extend("x-kubernetes-list-type" = "atomic"))]
    pub delivered_to: Vec<String>,
    /// When every target had it (RFC 3339); absent while deliveries are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::TIMESTAMP))]
    pub sent_at: Option<String>,
    /// Why the last attempt failed (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NOTIFY_ERROR))]
    pub last_error: Option<String>,
}

/// The subject of a budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind == 'key' ? has(self.__namespace__) : !has(self.__namespace__)").message("namespace is required for kind key and only allowed with it"))]
#[x_kube(validation = Rule::new("self.kind == 'organization' || size(self.name) > 0").message("name is required"))]
pub struct BudgetScope {
    /// `organization`, `team`, `user` or `key`.
    pub kind: ScopeKind,
    /// The organization name, Team name, user (a VirtualKey's owner) or VirtualKey name.
    #[serde(default)]
    #[schemars(length(max = bounds::NAME))]
    pub name: String,
    /// The VirtualKey's namespace, for kind `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::NAMESPACE))]
    pub namespace: Option<String>,
}

/// Budget scope kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ScopeKind {
    /// The whole organization.
    #[default]
    Organization,
    /// One Team.
    Team,
    /// One engineer: every key they own.
    User,
    /// One VirtualKey.
    Key,
}

/// Budget periods: calendar windows, or a rolling duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Period {
    /// Resets at midnight.
    #[default]
    Daily,
    /// Resets at midnight between Sunday and Monday.
    Weekly,
    /// Resets at midnight on the first of the month.
    Monthly,
    /// Resets at midnight on January 1.
    Yearly,
    /// A rolling window of `rollingSeconds`.
    Rolling,
}

/// What the operator observed about a Budget, including spend read from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the budget is in the compiled policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::CONDITIONS), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The limit in US dollars, e.g. `$250.00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DECIMAL))]
    pub limit: Option<String>,
    /// Spent in the current window, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DECIMAL))]
    pub spent: Option<String>,
    /// Remaining in the current window (limit - spent - reserved), in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::DECIMAL))]
    pub remaining: Option<String>,
    /// Spent in the current window, in micro-USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_micro_usd: Option<u64>,
    /// Reserved by requests in flight, in micro-USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_micro_usd: Option<u64>,
    /// Remaining in the current window, in micro-USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_micro_usd: Option<u64>,
    /// Start of the current window (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::TIMESTAMP))]
    pub window_start: Option<String>,
    /// When the current window ends and spend resets (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::TIMESTAMP))]
    pub resets_at: Option<String>,
    /// Threshold notifications of the current window (older windows are pruned). Written only
    /// by the notifier, with optimistic concurrency: one record per threshold and window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::NOTIFICATIONS), extend("x-kubernetes-list-type" = "atomic"))]
    pub notifications: Vec<NotificationRecord>,
}
