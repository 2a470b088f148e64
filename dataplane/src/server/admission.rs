//! Budget and rate-limit admission on the request path: plan the charges, ask the ledger
//! once, turn a refusal into the denial the engineer sees, and settle when the response ends.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::Audit;
use crate::audit::events::{BudgetThreshold, Identity};
use crate::denial::Denial;
use crate::ledger::{Ledger, LedgerError, RateKind, Refusal, Settlement};
use crate::limits::plan::{Plan, crossed_thresholds};
use crate::metrics::Metrics;
use crate::policy::document::LedgerFailureMode;

/// The ledgers a gateway admits against.
pub struct Ledgers {
    /// The configured ledger (embedded or Redis).
    pub primary: Arc<dyn Ledger>,
    /// This replica's own counters, used when the primary is unreachable and the policy
    /// says `fail_open_with_local_limits`.
    pub local: Arc<dyn Ledger>,
}

/// A request admitted against a ledger; settle it exactly once.
pub struct Admitted {
    plan: Plan,
    ledger: Arc<dyn Ledger>,
    metrics: Arc<Metrics>,
    span: tracing::Span,
    audit: Option<(Audit, Identity)>,
}

/// Admits `plan`, or says why not. `Ok(None)` when no limit applies.
pub async fn admit(
    ledgers: &Ledgers,
    plan: Plan,
    mode: LedgerFailureMode,
    metrics: &Arc<Metrics>,
    span: &tracing::Span,
) -> Result<Option<Admitted>, Denial> {
    if plan.is_empty() {
        return Ok(None);
    }
    let (ledger, verdict) = match ledgers.primary.admit(&plan.admission).await {
        Ok(v) => (ledgers.primary.clone(), v),
        Err(e) => {
            metrics.ledger_error("admit");
            match mode {
                LedgerFailureMode::FailClosed => {
                    return Err(Denial::LedgerUnavailable {
                        detail: e.to_string(),
                    });
                }
                LedgerFailureMode::FailOpenWithLocalLimits => {
                    tracing::warn!(error = %e, "ledger unavailable: admitting against local limits");
                    let v = ledgers.local.admit(&plan.admission).await.map_err(|e| {
                        Denial::LedgerUnavailable {
                            detail: e.to_string(),
                        }
                    })?;
                    (ledgers.local.clone(), v)
                }
            }
        }
    };
    match verdict {
        Ok(()) => Ok(Some(Admitted {
            plan,
            ledger,
            metrics: metrics.clone(),
            span: span.clone(),
            audit: None,
        })),
        Err(refusal) => Err(refusal_denial(&plan, refusal)),
    }
}

fn refusal_denial(plan: &Plan, refusal: Refusal) -> Denial {
    match refusal {
        Refusal::Budget {
            index,
            spent,
            reserved,
        } => match plan.budgets.get(index) {
            Some(b) => Denial::BudgetExhausted {
                budget: b.id.clone(),
                scope: format!("{} '{}'", scope_kind_name(b.scope.kind), b.scope.name),
                limit: b.limit_micro_usd,
                used: spent.saturating_add(reserved),
                estimate: plan.admission.estimate_micro_usd,
                period: b.period.clone(),
                resets_at: b.window.end.to_string(),
            },
            None => Denial::LedgerUnavailable {
                detail: "ledger refused an unknown budget".into(),
            },
        },
        Refusal::Rate {
            index,
            retry_after_ms,
        } => {
            let retry_after_secs = u64::try_from(retry_after_ms.max(1)).unwrap_or(1).div_ceil(1000);
            let reset = jiff::Timestamp::from_millisecond(plan.admission.now_ms + retry_after_ms)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let (scope, kind, limit) = match plan.rates.get(index) {
                Some(r) => (format!("{} '{}'", r.scope_kind, r.scope_name), r.kind, r.limit),
                None => (String::new(), RateKind::Requests, 0),
            };
            let kind = match kind {
                RateKind::Requests => "requests",
                RateKind::Tokens => "tokens",
                RateKind::Concurrent => "concurrent",
            };
            Denial::RateLimited {
                scope,
                kind,
                limit,
                retry_after_secs,
                reset_at: reset,
            }
        }
    }
}

fn scope_kind_name(kind: crate::policy::document::ScopeKind) -> &'static str {
    use crate::policy::document::ScopeKind as K;
    match kind {
        K::Organization => "organization",
        K::Team => "team",
        K::User => "user",
        K::Key => "key",
    }
}

impl Admitted {
    /// Records budget thresholds this request's settlement crosses in `audit`.
    pub fn with_audit(
        mut self,
        audit: Option<&Audit>,
        request_id: &str,
        key: &crate::policy::KeyEntry,
    ) -> Self {
        self.audit = audit.map(|a| {
            let who = Identity {
                request_id: request_id.to_owned(),
                key_id: Some(key.id.clone()),
                user: key.user.clone(),
                team: key.team.clone(),
                session_id: None,
            };
            (a.clone(), who)
        });
        self
    }

    /// Settles in the background (the response is already on its way), retrying briefly;
    /// a settlement that still fails is logged with its amount and counted, never dropped
    /// silently. Crossed soft thresholds are logged and counted.
    pub fn settle(self, settlement: Settlement) {
        let task = async move {
            let mut delay = Duration::from_millis(50);
            let mut last: Option<LedgerError> = None;
            for _ in 0..4 {
                match self.ledger.settle(&self.plan.admission, settlement).await {
                    Ok(after) => return self.after_settle(&after, settlement.actual_micro_usd),
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            self.metrics.ledger_error("settle");
            tracing::error!(
                parent: &self.span,
                error = %last.map(|e| e.to_string()).unwrap_or_default(),
                cost_micro_usd = settlement.actual_micro_usd,
                "settlement failed: spend not recorded in the ledger (its reservation lapses with the lease)"
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(task);
            }
            Err(_) => tracing::error!("settlement outside a runtime: spend not recorded"),
        }
    }

    fn after_settle(&self, after: &[u64], cost: u64) {
        for (b, spent) in self.plan.budgets.iter().zip(after) {
            self.metrics.budget_spend(&b.id, *spent, b.limit_micro_usd);
            for t in crossed_thresholds(
                &b.thresholds,
                b.limit_micro_usd,
                spent.saturating_sub(cost),
                *spent,
            ) {
                self.metrics.threshold_crossed(&b.id, t);
                tracing::warn!(
                    parent: &self.span,
                    budget = %b.id,
                    scope = ?b.scope,
                    threshold_percent = t,
                    spent_micro_usd = *spent,
                    limit_micro_usd = b.limit_micro_usd,
                    "budget threshold crossed"
                );
                if let Some((audit, who)) = &self.audit {
                    audit.budget_threshold(BudgetThreshold {
                        identity: who.clone(),
                        budget: b.id.clone(),
                        scope: format!("{} '{}'", scope_kind_name(b.scope.kind), b.scope.name),
                        threshold_percent: t,
                        spent_micro_usd: *spent,
                        limit_micro_usd: b.limit_micro_usd,
                    });
                }
            }
        }
    }
}
