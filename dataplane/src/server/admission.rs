//! Budget and rate-limit admission on the request path: plan the charges, ask the ledger
//! once, turn a refusal into the denial the engineer sees, and settle when the response ends.
//!
//! An admission is never stranded: the ledger call runs in its own task, so a request
//! dropped while waiting for it (the client left) still gets its answer, and an [`Admitted`]
//! dropped without a settlement (the request future dropped before a response body existed)
//! releases its reservation and slots at once instead of holding them for the lease.
//!
//! A settlement is never dropped silently: it is retried (safe, settlements are idempotent by
//! request id), then kept in the [`Outbox`] and replayed when the ledger answers again. A
//! request admitted on local limits while the shared ledger was down (fail open) settles
//! locally and is also settled on the shared ledger, so its spend reaches the shared budgets.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::Audit;
use crate::audit::events::{BudgetThreshold, Identity};
use crate::denial::Denial;
use crate::ledger::outbox::Outbox;
use crate::ledger::{Ledger, LedgerError, RateKind, Refusal, Settlement};
use crate::limits::plan::{Plan, crossed_thresholds};
use crate::metrics::Metrics;
use crate::policy::document::LedgerFailureMode;

/// Whole seconds a request waits when requests in flight hold a budget's room.
pub const HELD_RETRY_SECS: u64 = 1;

/// The ledgers a gateway admits against.
#[derive(Clone)]
pub struct Ledgers {
    /// The configured ledger (embedded or Redis).
    pub primary: Arc<dyn Ledger>,
    /// This replica's own counters, used when the primary is unreachable and the policy
    /// says `fail_open_with_local_limits`.
    pub local: Arc<dyn Ledger>,
    /// Settlements the primary did not take, replayed when it answers again.
    pub outbox: Arc<Outbox>,
}

/// A request admitted against a ledger; settle it exactly once. Dropped unsettled, it
/// releases everything it holds, charging nothing.
pub struct Admitted {
    inner: Option<Held>,
}

/// What an admission holds until it is settled.
struct Held {
    plan: Plan,
    /// The ledger that admitted the request (the primary, or the local one when failing open).
    ledger: Arc<dyn Ledger>,
    /// The shared ledger, whose budgets the spend belongs to in any case.
    primary: Arc<dyn Ledger>,
    /// Admitted on local limits because the primary was down.
    fallback: bool,
    outbox: Arc<Outbox>,
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
    let (ledgers, metrics, span) = (ledgers.clone(), metrics.clone(), span.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        // When the request is gone, the send fails and drops the admission: released.
        let _ = tx.send(admit_now(&ledgers, plan, mode, &metrics, &span).await);
    });
    rx.await.unwrap_or_else(|_| {
        Err(Denial::LedgerUnavailable {
            detail: "the admission task failed".into(),
        })
    })
}

async fn admit_now(
    ledgers: &Ledgers,
    plan: Plan,
    mode: LedgerFailureMode,
    metrics: &Arc<Metrics>,
    span: &tracing::Span,
) -> Result<Option<Admitted>, Denial> {
    let (ledger, fallback, verdict) = match ledgers.primary.admit(&plan.admission).await {
        Ok(v) => (ledgers.primary.clone(), false, v),
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
                    (ledgers.local.clone(), true, v)
                }
            }
        }
    };
    match verdict {
        Ok(()) => Ok(Some(Admitted {
            inner: Some(Held {
                plan,
                ledger,
                primary: ledgers.primary.clone(),
                fallback,
                outbox: ledgers.outbox.clone(),
                metrics: metrics.clone(),
                span: span.clone(),
                audit: None,
            }),
        })),
        Err(refusal @ Refusal::Budget { .. }) => {
            let refusal = exhausted_instead(&*ledger, &plan, refusal).await;
            Err(refusal_denial(&plan, refusal))
        }
        Err(refusal) => Err(refusal_denial(&plan, refusal)),
    }
}

/// Whether a budget refusal means the money is gone: the settled spend leaves no room for
/// the estimate (else requests in flight hold the room, and waiting helps).
fn money_gone(plan: &Plan, index: usize, spent: u64) -> bool {
    plan.budgets
        .get(index)
        .is_none_or(|b| spent.saturating_add(plan.money_estimate_micro_usd) > b.limit_micro_usd)
}

/// A refusal for held room, unless another budget of the plan has no money left: the ledger
/// stops at the first budget without room, but waiting cannot help the engineer if a later
/// one is spent, so that one is named (one more ledger read, on refusals only).
async fn exhausted_instead(ledger: &dyn Ledger, plan: &Plan, refusal: Refusal) -> Refusal {
    let Refusal::Budget { index, spent, .. } = refusal else {
        return refusal;
    };
    if money_gone(plan, index, spent) || plan.budgets.len() < 2 {
        return refusal;
    }
    let counters: Vec<String> = plan.admission.budgets.iter().map(|b| b.counter.clone()).collect();
    let Ok(states) = ledger.budget_states(&counters, plan.admission.now_ms).await else {
        return refusal;
    };
    states
        .iter()
        .enumerate()
        .find(|(i, s)| money_gone(plan, *i, s.spent))
        .map_or(refusal, |(index, s)| Refusal::Budget {
            index,
            spent: s.spent,
            reserved: s.reserved,
        })
}

fn refusal_denial(plan: &Plan, refusal: Refusal) -> Denial {
    match refusal {
        Refusal::Budget {
            index,
            spent,
            reserved,
        } => match plan.budgets.get(index) {
            Some(b) if money_gone(plan, index, spent) => Denial::BudgetExhausted {
                budget: b.id.clone(),
                scope: format!("{} '{}'", scope_kind_name(b.scope.kind), b.scope.name),
                limit: b.limit_micro_usd,
                used: spent,
                estimate: plan.admission.estimate_micro_usd,
                period: b.period.clone(),
                resets_at: b.window.end.to_string(),
            },
            Some(b) => Denial::BudgetHeld {
                budget: b.id.clone(),
                scope: format!("{} '{}'", scope_kind_name(b.scope.kind), b.scope.name),
                period: b.period.clone(),
                left: b.limit_micro_usd.saturating_sub(spent),
                reserved,
                estimate: plan.admission.estimate_micro_usd,
                retry_after_secs: HELD_RETRY_SECS,
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
        if let Some(held) = self.inner.as_mut() {
            held.audit = audit.map(|a| {
                let who = Identity {
                    request_id: request_id.to_owned(),
                    key_id: Some(key.id.clone()),
                    user: key.user.clone(),
                    team: key.team.clone(),
                    session_id: None,
                };
                (a.clone(), who)
            });
        }
        self
    }

    /// The estimate reserved, micro-USD.
    pub fn estimate_micro_usd(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |h| h.plan.admission.estimate_micro_usd)
    }

    /// Settles in the background (the response is already on its way), retrying briefly;
    /// a settlement that still fails waits in the outbox for the ledger to come back (logged
    /// with its amount and counted). Crossed soft thresholds are logged and counted.
    pub fn settle(mut self, settlement: Settlement) {
        if let Some(held) = self.inner.take() {
            held.settle(settlement);
        }
    }
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plan = self.inner.as_ref().map(|h| &h.plan.admission);
        f.debug_struct("Admitted")
            .field("request_id", &plan.map(|a| a.request_id.as_str()))
            .field("estimate_micro_usd", &plan.map(|a| a.estimate_micro_usd))
            .finish()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(held) = self.inner.take() {
            tracing::debug!(parent: &held.span, "admission dropped unsettled: released");
            held.settle(Settlement::default());
        }
    }
}

/// Attempts at settling on the request path before the settlement goes to the outbox, and
/// the wait before the first retry (growing fourfold: 50 ms, 200 ms, 800 ms).
const SETTLE_ATTEMPTS: u32 = 4;
const SETTLE_FIRST_RETRY: Duration = Duration::from_millis(50);

impl Held {
    fn settle(self, settlement: Settlement) {
        let task = async move {
            let charged = settlement.actual_micro_usd > 0 || settlement.actual_tokens > 0;
            if self.fallback {
                // The local counters held the slot and the reservation: release them.
                if let Err(e) = self.ledger.settle(&self.plan.admission, settlement).await {
                    tracing::warn!(parent: &self.span, error = %e, "local settlement failed");
                }
                if !charged {
                    return;
                }
            }
            // The shared ledger's budgets carry the spend, whichever ledger admitted it.
            let target = if self.fallback {
                &self.primary
            } else {
                &self.ledger
            };
            let mut delay = SETTLE_FIRST_RETRY;
            let mut last: Option<LedgerError> = None;
            for attempt in 1..=SETTLE_ATTEMPTS {
                // Idempotent by request id: a retry after a lost reply charges once.
                match target.settle(&self.plan.admission, settlement).await {
                    Ok(after) => return self.after_settle(&after, settlement.actual_micro_usd),
                    Err(e) => last = Some(e),
                }
                if attempt < SETTLE_ATTEMPTS {
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
            }
            self.metrics.ledger_error("settle");
            let error = last.map(|e| e.to_string()).unwrap_or_default();
            if self.outbox.push(self.plan.admission.clone(), settlement) {
                tracing::warn!(
                    parent: &self.span,
                    error = %error,
                    cost_micro_usd = settlement.actual_micro_usd,
                    waiting = self.outbox.len(),
                    "settlement kept in the outbox: the ledger did not answer; it is replayed when it does"
                );
            } else {
                tracing::error!(
                    parent: &self.span,
                    error = %error,
                    cost_micro_usd = settlement.actual_micro_usd,
                    "settlement failed and the outbox is full: spend not recorded in the ledger"
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::BudgetState;
    use crate::ledger::conformance::admission;
    use crate::ledger::memory::MemoryLedger;
    use crate::limits::plan::PlannedBudget;
    use crate::limits::window::Window;
    use crate::policy::document::{BudgetScope, ScopeKind};

    const NOW: i64 = 1_000_000;

    /// A plan reserving `estimate` on budgets `b:one` and `b:two` (limits as given).
    fn plan(id: &str, estimate: u64, limits: [u64; 2]) -> Plan {
        let window = Window {
            start: jiff::Timestamp::from_millisecond(0).unwrap(),
            end: jiff::Timestamp::from_millisecond(NOW * 10).unwrap(),
        };
        let budget = |name: &str, limit| PlannedBudget {
            id: name.into(),
            scope: BudgetScope {
                kind: ScopeKind::Team,
                name: "t".into(),
            },
            limit_micro_usd: limit,
            period: "daily".into(),
            window,
            thresholds: Vec::new(),
        };
        Plan {
            admission: admission(
                id,
                estimate,
                &[("b:one", limits[0], NOW * 10), ("b:two", limits[1], NOW * 10)],
                NOW,
            ),
            budgets: vec![budget("one", limits[0]), budget("two", limits[1])],
            rates: Vec::new(),
            money_estimate_micro_usd: estimate,
        }
    }

    fn ledgers() -> (Ledgers, Arc<MemoryLedger>) {
        let memory = Arc::new(MemoryLedger::ephemeral());
        let ledgers = Ledgers {
            primary: memory.clone(),
            local: Arc::new(MemoryLedger::ephemeral()),
            outbox: Arc::new(Outbox::memory(16, Default::default())),
        };
        (ledgers, memory)
    }

    async fn try_admit(l: &Ledgers, p: Plan) -> Result<Option<Admitted>, Denial> {
        let metrics = Arc::new(Metrics::new());
        admit(
            l,
            p,
            LedgerFailureMode::FailClosed,
            &metrics,
            &tracing::Span::none(),
        )
        .await
    }

    async fn states(ledger: &MemoryLedger) -> Vec<BudgetState> {
        let counters = ["b:one".to_owned(), "b:two".to_owned()];
        ledger.budget_states(&counters, NOW).await.unwrap()
    }

    async fn settled(ledger: &MemoryLedger, spent: u64) {
        for _ in 0..100 {
            let s = states(ledger).await;
            if s[0].spent == spent && s[0].reserved == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("not settled at {spent}: {:?}", states(ledger).await);
    }

    #[tokio::test]
    async fn room_held_in_flight_is_a_429_and_money_gone_a_402() {
        let (l, memory) = ledgers();
        let first = try_admit(&l, plan("r1", 600, [1_000, 10_000]))
            .await
            .unwrap()
            .unwrap();
        // 600 reserved: 600 more fits the money (0 spent) but not the room.
        match try_admit(&l, plan("r2", 600, [1_000, 10_000])).await {
            Err(d @ Denial::BudgetHeld { .. }) => {
                assert_eq!(d.status(), 429);
                assert!(
                    d.message().contains("held by requests in flight"),
                    "{}",
                    d.message()
                );
                assert!(d.headers().contains(&("retry-after".into(), "1".into())));
            }
            other => panic!("{other:?}"),
        }
        first.settle(Settlement {
            actual_micro_usd: 500,
            actual_tokens: 0,
        });
        settled(&memory, 500).await;
        // 500 spent: 600 no longer fits the money.
        match try_admit(&l, plan("r3", 600, [1_000, 10_000])).await {
            Err(Denial::BudgetExhausted { used, .. }) => assert_eq!(used, 500),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_later_budget_without_money_is_named_rather_than_a_held_one() {
        let (l, memory) = ledgers();
        // Budget two has 400 left of its money once 600 is spent there.
        let a = try_admit(&l, plan("r1", 600, [10_000, 1_000]))
            .await
            .unwrap()
            .unwrap();
        a.settle(Settlement {
            actual_micro_usd: 600,
            actual_tokens: 0,
        });
        settled(&memory, 600).await;
        // Hold budget one's room with a big reservation on it alone.
        let hold = Plan {
            admission: admission("big", 9_000, &[("b:one", 10_000, NOW * 10)], NOW),
            budgets: plan("x", 0, [10_000, 0]).budgets[..1].to_vec(),
            rates: Vec::new(),
            money_estimate_micro_usd: 9_000,
        };
        let _held = try_admit(&l, hold).await.unwrap().unwrap();
        // Budget one refuses first (its room is held), but two has no money for 500.
        match try_admit(&l, plan("r2", 500, [10_000, 1_000])).await {
            Err(Denial::BudgetExhausted { budget, used, .. }) => {
                assert_eq!((budget.as_str(), used), ("two", 600))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_dropped_admission_releases_what_it_holds_at_once() {
        let (l, memory) = ledgers();
        let a = try_admit(&l, plan("r1", 700, [1_000, 10_000]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(states(&memory).await[0].reserved, 700);
        drop(a);
        settled(&memory, 0).await;
        assert!(try_admit(&l, plan("r2", 700, [1_000, 10_000])).await.is_ok());
    }

    /// The embedded ledger behind a switch: down, every operation fails.
    struct Switch {
        inner: MemoryLedger,
        down: std::sync::atomic::AtomicBool,
    }

    impl Switch {
        fn check(&self) -> Result<(), LedgerError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(LedgerError::Unavailable("down (test)".into()));
            }
            Ok(())
        }

        fn set_down(&self, down: bool) {
            self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Ledger for Switch {
        fn admit<'a>(
            &'a self,
            a: &'a crate::ledger::Admission,
        ) -> crate::ledger::LedgerFuture<'a, Result<(), Refusal>> {
            Box::pin(async move {
                self.check()?;
                self.inner.admit(a).await
            })
        }

        fn settle<'a>(
            &'a self,
            a: &'a crate::ledger::Admission,
            s: Settlement,
        ) -> crate::ledger::LedgerFuture<'a, Vec<u64>> {
            Box::pin(async move {
                self.check()?;
                self.inner.settle(a, s).await
            })
        }

        fn budget_states<'a>(
            &'a self,
            c: &'a [String],
            now: i64,
        ) -> crate::ledger::LedgerFuture<'a, Vec<BudgetState>> {
            self.inner.budget_states(c, now)
        }

        fn kind(&self) -> &'static str {
            "switch"
        }
    }

    #[tokio::test]
    async fn missed_settlements_wait_in_the_outbox_and_fail_open_spend_reaches_the_shared_ledger() {
        let primary = Arc::new(Switch {
            inner: MemoryLedger::ephemeral(),
            down: true.into(),
        });
        let l = Ledgers {
            primary: primary.clone(),
            local: Arc::new(MemoryLedger::ephemeral()),
            outbox: Arc::new(Outbox::memory(16, Default::default())),
        };
        let metrics = Arc::new(Metrics::new());
        let span = tracing::Span::none();
        let admit_open = |id: &str| {
            admit(
                &l,
                plan(id, 100, [10_000, 10_000]),
                LedgerFailureMode::FailOpenWithLocalLimits,
                &metrics,
                &span,
            )
        };
        // Redis is down for the whole request: admitted locally, settled nowhere shared.
        let a = admit_open("r1").await.unwrap().unwrap();
        a.settle(Settlement {
            actual_micro_usd: 70,
            actual_tokens: 0,
        });
        for _ in 0..400 {
            if l.outbox.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(l.outbox.len(), 1, "the settlement waits for the shared ledger");
        primary.set_down(false);
        assert_eq!(l.outbox.replay(&*primary).await.unwrap(), 1);
        assert_eq!(states(&primary.inner).await[0].spent, 70);

        // Down at admission, back by the end of the response: settled on it directly.
        primary.set_down(true);
        let b = admit_open("r2").await.unwrap().unwrap();
        primary.set_down(false);
        b.settle(Settlement {
            actual_micro_usd: 30,
            actual_tokens: 0,
        });
        settled(&primary.inner, 100).await;
        assert!(l.outbox.is_empty());
    }
}
