//! Budget notifications: when a Budget's spend crosses one of its `thresholds` in the current
//! window (the window the gateway reports on `/admin/spend`), an Event on the Budget and a
//! message to each configured target (a signed JSON webhook, a Slack incoming webhook).
//!
//! Exactly one replica delivers each (budget, window, threshold): it first *claims* the
//! notification by adding a record to `status.notifications` with a JSON Patch whose first
//! operation tests `metadata.resourceVersion` (the API server applies it atomically, so of
//! replicas racing from the same version one wins and the others get a failed test or a
//! conflict, re-read, and find the claim). Only the winner records the Event and sends; it then
//! records the outcome in its record (attempts, targets delivered to, `sentAt` or `lastError`)
//! and retries failed targets with backoff. A claim whose replica stops making progress (it
//! crashed between claim and delivery) is taken over, again through a conditional write, after
//! a grace period: delivery is at-least-once, and every delivery of one notification carries
//! the same `x-tollgate-delivery` id so a receiver can drop the rare duplicate.
//!
//! This module is the pure part (what is due, records, payloads, signatures); [`deliver`]
//! does the API calls and HTTP.

pub mod deliver;

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::compile::BudgetSpend;
use crate::compile::status::{metav1_time, usd};
use crate::crd::{BudgetScope, NotificationRecord, Period, ScopeKind};

/// The status field holding the records (camelCase, as serialized).
pub const NOTIFICATIONS_FIELD: &str = "notifications";

/// Event reason of a threshold below 100 %.
pub const REASON_CROSSED: &str = "BudgetThresholdCrossed";
/// Event reason of the 100 % threshold.
pub const REASON_EXHAUSTED: &str = "BudgetExhausted";

/// The thresholds (sorted, deduplicated) that `spent` has reached against `limit`: a
/// threshold `t` is crossed when `spent >= t% of limit`. A zero limit crosses nothing.
pub fn crossed(thresholds: &[u8], spent: u64, limit: u64) -> Vec<u8> {
    let mut out: Vec<u8> = thresholds
        .iter()
        .copied()
        .filter(|t| (1..=100).contains(t))
        .filter(|t| limit > 0 && u128::from(spent) * 100 >= u128::from(*t) * u128::from(limit))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether window `a` starts after window `b` (RFC 3339; compared as instants, as strings when
/// one does not parse).
fn later(a: &str, b: &str) -> bool {
    match (a.parse::<Timestamp>(), b.parse::<Timestamp>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => a > b,
    }
}

/// What one budget's notifier has to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Thresholds crossed in the current window with no record yet: claim them.
    pub claim: Vec<u8>,
    /// Thresholds this replica claimed whose delivery is incomplete and due for a retry.
    pub retry: Vec<u8>,
    /// Thresholds another replica claimed but stopped delivering: take them over.
    pub take_over: Vec<u8>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.claim.is_empty() && self.retry.is_empty() && self.take_over.is_empty()
    }
}

/// Retry delays: 30 s, doubling, at most 15 minutes.
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(5);
    Duration::from_secs(30 * 2u64.pow(exp)).min(Duration::from_secs(900))
}

fn elapsed_since(at: Option<&str>, now: Timestamp) -> Option<Duration> {
    let at: Timestamp = at?.parse().ok()?;
    Some(Duration::try_from(now.duration_since(at)).unwrap_or(Duration::ZERO))
}

/// What is due for one budget, given its thresholds, the gateway's spend and the records in
/// its status, for replica `me` at `now`. Another replica's unfinished claim is taken over once
/// it has shown no progress for `take_over_after`.
pub fn plan(
    thresholds: &[u8],
    spend: &BudgetSpend,
    records: &[NotificationRecord],
    me: &str,
    now: Timestamp,
    take_over_after: Duration,
) -> Plan {
    let window = spend.window_start.as_str();
    // Spend read before a reset another replica has already seen: nothing to do (and nothing
    // of the newer window may be pruned).
    if window.is_empty() || records.iter().any(|r| later(&r.window, window)) {
        return Plan::default();
    }
    let current: Vec<&NotificationRecord> = records.iter().filter(|r| r.window == window).collect();
    let mut out = Plan {
        claim: crossed(thresholds, spend.spent_micro_usd, spend.limit_micro_usd)
            .into_iter()
            .filter(|t| !current.iter().any(|r| r.threshold == *t))
            .collect(),
        ..Plan::default()
    };
    for r in current.iter().filter(|r| r.sent_at.is_none()) {
        if !thresholds.contains(&r.threshold) {
            continue;
        }
        let last = r.last_attempt_at.as_deref().or(Some(r.claimed_at.as_str()));
        let quiet = elapsed_since(last, now).unwrap_or(Duration::MAX);
        if r.claimed_by == me {
            if r.attempts == 0 || quiet >= backoff(r.attempts) {
                out.retry.push(r.threshold);
            }
        } else if quiet >= take_over_after {
            out.take_over.push(r.threshold);
        }
    }
    out
}

/// The records to write for a claim: those of older windows and of thresholds no longer in
/// the spec are pruned, `claim` is added and `take_over` is re-assigned to `me`.
pub fn claimed_records(
    records: &[NotificationRecord],
    thresholds: &[u8],
    window: &str,
    plan: &Plan,
    me: &str,
    now: Timestamp,
) -> Vec<NotificationRecord> {
    let at = metav1_time(now);
    let mut out: Vec<NotificationRecord> = records
        .iter()
        .filter(|r| r.window == window && thresholds.contains(&r.threshold))
        .cloned()
        .map(|mut r| {
            if plan.take_over.contains(&r.threshold) && r.sent_at.is_none() {
                r.claimed_by = me.to_owned();
                r.claimed_at = at.clone();
            }
            r
        })
        .collect();
    for t in &plan.claim {
        out.push(NotificationRecord {
            window: window.to_owned(),
            threshold: *t,
            claimed_at: at.clone(),
            claimed_by: me.to_owned(),
            ..Default::default()
        });
    }
    out.sort_by_key(|r| r.threshold);
    out
}

/// What one delivery attempt of one notification achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempt {
    /// Targets that accepted it.
    pub delivered: Vec<String>,
    /// The first failure, when a target did not (secret-free).
    pub error: Option<String>,
}

/// Records the outcome of an attempt on `me`'s record of (`window`, `threshold`); a record
/// another replica has taken over meanwhile is left alone. Returns whether it changed.
pub fn record_attempt(
    records: &mut [NotificationRecord],
    window: &str,
    threshold: u8,
    me: &str,
    attempt: &Attempt,
    now: Timestamp,
) -> bool {
    let Some(r) = records
        .iter_mut()
        .find(|r| r.window == window && r.threshold == threshold && r.claimed_by == me)
    else {
        return false;
    };
    let at = metav1_time(now);
    r.attempts = r.attempts.saturating_add(1);
    r.last_attempt_at = Some(at.clone());
    for d in &attempt.delivered {
        if !r.delivered_to.contains(d) {
            r.delivered_to.push(d.clone());
        }
    }
    match &attempt.error {
        None => {
            r.sent_at = Some(at);
            r.last_error = None;
        }
        Some(e) => r.last_error = Some(crate::names::truncate(e, 1024)),
    }
    true
}

/// The id every delivery of one notification carries (`x-tollgate-delivery`), the same from
/// every replica and on every retry: hex SHA-256 of budget UID, window and threshold, 32
/// characters.
pub fn delivery_id(budget_uid: &str, window: &str, threshold: u8) -> String {
    let mut h = Sha256::new();
    h.update(budget_uid.as_bytes());
    h.update(b"\n");
    h.update(window.as_bytes());
    h.update(b"\n");
    h.update(threshold.to_string().as_bytes());
    hex::encode(h.finalize())[..32].to_owned()
}

/// The JSON body of a webhook notification (and what Events and Slack messages say).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    /// `budget.threshold_crossed` or `budget.exhausted` (the 100 % threshold).
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// The delivery id (also in `x-tollgate-delivery`).
    pub id: String,
    /// The Budget's name (the budget id).
    pub budget: String,
    /// What the budget applies to.
    pub scope: ScopePayload,
    /// The budget's period (`daily`, `weekly`, `monthly`, `yearly`, `rolling`).
    pub period: Period,
    /// The threshold crossed, percent.
    pub threshold: u8,
    /// Spent as a percentage of the limit, two decimals.
    pub percent: f64,
    /// Spent in the window, micro-USD.
    pub spent_micro_usd: u64,
    /// The limit, micro-USD.
    pub limit_micro_usd: u64,
    /// Spent, e.g. `$83.40`.
    pub spent: String,
    /// The limit, e.g. `$100.00`.
    pub limit: String,
    /// Window start (RFC 3339).
    pub window_start: String,
    /// When the window ends and spend resets (RFC 3339).
    pub resets_at: String,
    /// The cluster's name, when the operator was given one (`--cluster-name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The operator's namespace.
    pub namespace: String,
    /// When the crossing was detected (RFC 3339).
    pub detected_at: String,
}

/// A budget's scope in a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopePayload {
    /// `organization`, `team`, `user` or `key`.
    pub kind: ScopeKind,
    /// The subject.
    pub name: String,
    /// The VirtualKey's namespace, for kind `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl From<&BudgetScope> for ScopePayload {
    fn from(s: &BudgetScope) -> Self {
        Self {
            kind: s.kind,
            name: s.name.clone(),
            namespace: s.namespace.clone(),
        }
    }
}

/// Everything a payload is built from besides the spend.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// Budget name.
    pub budget: &'a str,
    /// Budget UID (for the delivery id).
    pub uid: &'a str,
    /// Its scope.
    pub scope: &'a BudgetScope,
    /// Its period.
    pub period: Period,
    /// `--cluster-name`.
    pub cluster: Option<&'a str>,
    /// The operator's namespace.
    pub namespace: &'a str,
}

/// The payload of one notification.
pub fn payload(subject: &Subject<'_>, spend: &BudgetSpend, threshold: u8, detected_at: &str) -> Payload {
    let percent = if spend.limit_micro_usd == 0 {
        0.0
    } else {
        let basis_points = u128::from(spend.spent_micro_usd) * 10_000 / u128::from(spend.limit_micro_usd);
        (basis_points.min(u128::from(u32::MAX)) as f64) / 100.0
    };
    Payload {
        type_: if threshold >= 100 {
            "budget.exhausted"
        } else {
            "budget.threshold_crossed"
        },
        id: delivery_id(subject.uid, &spend.window_start, threshold),
        budget: subject.budget.to_owned(),
        scope: subject.scope.into(),
        period: subject.period,
        threshold,
        percent,
        spent_micro_usd: spend.spent_micro_usd,
        limit_micro_usd: spend.limit_micro_usd,
        spent: usd(spend.spent_micro_usd),
        limit: usd(spend.limit_micro_usd),
        window_start: spend.window_start.clone(),
        resets_at: spend.resets_at.clone(),
        cluster: subject.cluster.map(str::to_owned),
        namespace: subject.namespace.to_owned(),
        detected_at: detected_at.to_owned(),
    }
}

fn scope_text(s: &ScopePayload) -> String {
    match (s.kind, &s.namespace) {
        (ScopeKind::Organization, _) if s.name.is_empty() => "the organization".to_owned(),
        (ScopeKind::Organization, _) => format!("organization {}", s.name),
        (ScopeKind::Team, _) => format!("team {}", s.name),
        (ScopeKind::User, _) => format!("user {}", s.name),
        (ScopeKind::Key, Some(ns)) => format!("key {ns}/{}", s.name),
        (ScopeKind::Key, None) => format!("key {}", s.name),
    }
}

impl Payload {
    /// The Event reason.
    pub fn reason(&self) -> &'static str {
        if self.threshold >= 100 {
            REASON_EXHAUSTED
        } else {
            REASON_CROSSED
        }
    }

    /// One sentence for a human (Event note, Slack text).
    pub fn message(&self) -> String {
        let what = if self.threshold >= 100 {
            "is exhausted".to_owned()
        } else {
            format!("crossed {}%", self.threshold)
        };
        format!(
            "Budget {} ({}) {what}: {} of {} spent ({}%) in the window from {}; resets at {}.",
            self.budget,
            scope_text(&self.scope),
            self.spent,
            self.limit,
            self.percent,
            self.window_start,
            self.resets_at,
        )
    }
}

/// A webhook request: the body and the headers to send with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    /// The JSON body, exactly as signed.
    pub body: Vec<u8>,
    /// Header names and values.
    pub headers: Vec<(&'static str, String)>,
}

/// The signed webhook request for `payload` at unix time `timestamp`. The signature is the
/// audit webhooks' format: `x-tollgate-signature: t=<timestamp>,v1=<hex HMAC-SHA256(secret,
/// "<timestamp>.<body>")>`; `x-tollgate-timestamp` repeats the timestamp.
pub fn webhook_request(payload: &Payload, secret: &[u8], timestamp: u64) -> WebhookRequest {
    let body = serde_json::to_vec(payload).unwrap_or_default();
    let signature = tollgate_dataplane::audit::sink::webhook_signature(secret, timestamp, &body);
    WebhookRequest {
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("x-tollgate-event", payload.type_.to_owned()),
            ("x-tollgate-delivery", payload.id.clone()),
            ("x-tollgate-timestamp", timestamp.to_string()),
            ("x-tollgate-signature", signature),
        ],
        body,
    }
}

/// A Slack incoming-webhook body: `{"text": ...}`.
pub fn slack_body(payload: &Payload) -> Vec<u8> {
    let icon = if payload.threshold >= 100 {
        ":rotating_light:"
    } else {
        ":warning:"
    };
    // Slack's control characters escaped (a user scope is any string: `<!channel>` must not
    // ping anyone), control characters dropped.
    let message: String = payload
        .message()
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let text = format!("{icon} {message}");
    serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default()
}

#[cfg(test)]
mod tests;
