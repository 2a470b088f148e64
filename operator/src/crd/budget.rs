//! `Budget`: a spend ceiling on a scope (organization, team, user or key) for a period.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::bounds;

use super::common::Condition;

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
}
