//! Building statuses: the `Ready` condition (keeping its transition time while it holds) and
//! the record of which statuses differ from what the cluster already shows.

use jiff::Timestamp;
use serde::Serialize;

use crate::crd::Condition;

/// The condition type every resource reports.
pub const READY: &str = "Ready";

/// Why a resource is or is not part of the compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the resource is compiled into the policy.
    pub ready: bool,
    /// CamelCase reason, e.g. `Compiled` or `TeamNotFound`.
    pub reason: &'static str,
    /// A sentence for a human.
    pub message: String,
}

impl Readiness {
    /// Compiled into the policy.
    pub fn ok(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason,
            message: message.into(),
        }
    }

    /// Left out of the policy.
    pub fn fail(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
        }
    }
}

/// The `Ready` condition for `readiness`, keeping the previous transition time when the
/// status did not change (so an unchanged world produces an identical status).
pub fn ready_condition(
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
    readiness: &Readiness,
) -> Condition {
    let status = if readiness.ready { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| metav1_time(now));
    Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: readiness.reason.to_owned(),
        message: readiness.message.clone(),
        last_transition_time,
        observed_generation: generation,
    }
}

/// `now` as `metav1.Time` writes it: RFC 3339 in UTC, whole seconds.
pub fn metav1_time(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Which kind of resource a status belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `AuditSink`
    AuditSink,
    /// `Budget`
    Budget,
    /// `McpServer`
    McpServer,
    /// `ModelProvider`
    ModelProvider,
    /// `ModelRoute`
    ModelRoute,
    /// `Team`
    Team,
    /// `VirtualKey`
    VirtualKey,
}

impl Kind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuditSink => "AuditSink",
            Kind::Budget => "Budget",
            Kind::McpServer => "McpServer",
            Kind::ModelProvider => "ModelProvider",
            Kind::ModelRoute => "ModelRoute",
            Kind::Team => "Team",
            Kind::VirtualKey => "VirtualKey",
        }
    }

    /// The resource's plural (its URL segment).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::AuditSink => "auditsinks",
            Kind::Budget => "budgets",
            Kind::McpServer => "mcpservers",
            Kind::ModelProvider => "modelproviders",
            Kind::ModelRoute => "modelroutes",
            Kind::Team => "teams",
            Kind::VirtualKey => "virtualkeys",
        }
    }
}

/// The desired status of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The resource's kind.
    pub kind: Kind,
    /// Its namespace (VirtualKeys only).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The whole desired `status` object.
    pub status: serde_json::Value,
    /// Whether it differs from the status the cluster shows.
    pub changed: bool,
    /// The Ready condition before, as (status, reason), when there was one.
    pub previous_ready: Option<(String, String)>,
    /// Why the resource is (not) ready now.
    pub readiness: Readiness,
}

impl StatusUpdate {
    /// `namespace/name` or `name`, for logs.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Builds a [`StatusUpdate`], comparing `desired` to the `current` status as JSON.
pub fn update<S: Serialize>(
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    current: Option<&S>,
    desired: &S,
    previous: &[Condition],
    readiness: Readiness,
) -> StatusUpdate {
    let desired = serde_json::to_value(desired).unwrap_or(serde_json::Value::Null);
    let current = current
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(serde_json::Value::Null);
    let previous_ready = previous
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| (c.status.clone(), c.reason.clone()));
    StatusUpdate {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
        changed: desired != current,
        status: desired,
        previous_ready,
        readiness,
    }
}

/// Formats micro-USD as dollars with at least 2 decimals, e.g. `$0.001234`, `$250.00`.
pub fn usd(micro: u64) -> String {
    let mut frac = format!("{:06}", micro % 1_000_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("${}.{frac}", micro / 1_000_000)
}

/// Parses a decimal dollar amount (`"250"`, `"0.5"`, at most 6 decimals) into micro-USD.
pub fn parse_usd(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 12 || frac.len() > 6 || !digits(int) || !digits(frac) {
        return None;
    }
    if s.contains('.') && frac.is_empty() {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let frac: u64 = format!("{frac:0<6}").parse().ok()?;
    int.checked_mul(1_000_000)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_format_and_parse() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(1_234), "$0.001234");
        assert_eq!(usd(250_000_000), "$250.00");
        assert_eq!(usd(1_500_000), "$1.50");
        assert_eq!(parse_usd("250"), Some(250_000_000));
        assert_eq!(parse_usd("0.5"), Some(500_000));
        assert_eq!(parse_usd("1.000001"), Some(1_000_001));
        for bad in ["", ".5", "1.", "1.0000001", "-1", "1e3", "abc"] {
            assert_eq!(parse_usd(bad), None, "{bad}");
        }
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let c0 = ready_condition(&[], Some(1), t0, &Readiness::ok("Compiled", "ok"));
        let c1 = ready_condition(
            std::slice::from_ref(&c0),
            Some(2),
            t1,
            &Readiness::ok("Compiled", "ok"),
        );
        assert_eq!(c1.last_transition_time, c0.last_transition_time);
        let c2 = ready_condition(&[c1], Some(2), t1, &Readiness::fail("TeamNotFound", "x"));
        assert_eq!(c2.last_transition_time, t1.to_string());
    }

    /// `metav1.Time` has whole seconds; a clock reading with nanoseconds is not written as is.
    #[test]
    fn transition_times_are_whole_seconds_in_utc() {
        let t: Timestamp = "2026-11-15T12:00:00.123456789Z".parse().unwrap();
        let c = ready_condition(&[], Some(1), t, &Readiness::ok("Compiled", "ok"));
        assert_eq!(c.last_transition_time, "2026-11-15T12:00:00Z");
    }
}
