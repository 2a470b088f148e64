//! The conformance suite every [`Ledger`] implementation must pass. It is public so the Redis
//! ledger's tests (against a real `redis-server`) run exactly the same checks as the embedded
//! one's. Each check gets a fresh ledger from the factory; counters use unique names.

use std::future::Future;
use std::sync::Arc;

use super::{Admission, BudgetCharge, BudgetState, Ledger, RateCharge, RateKind, Refusal, Settlement};

/// An admission charging `estimate` on budget counters `(counter, limit, expires_at_ms)`.
pub fn admission(request_id: &str, estimate: u64, budgets: &[(&str, u64, i64)], now_ms: i64) -> Admission {
    Admission {
        request_id: request_id.to_owned(),
        estimate_micro_usd: estimate,
        budgets: budgets
            .iter()
            .map(|(c, limit, exp)| BudgetCharge {
                counter: (*c).to_owned(),
                limit_micro_usd: *limit,
                expires_at_ms: *exp,
            })
            .collect(),
        rates: Vec::new(),
        now_ms,
        lease_ms: 60_000,
    }
}

fn with_rate(
    mut a: Admission,
    counter: &str,
    kind: RateKind,
    limit: u64,
    amount: u64,
    window_end_ms: i64,
) -> Admission {
    a.rates.push(RateCharge {
        counter: counter.to_owned(),
        kind,
        limit,
        amount,
        window_end_ms,
    });
    a
}

const NOW: i64 = 1_800_000_000_000;
const LATER: i64 = NOW + 86_400_000;

/// Runs every check, each against a fresh ledger from `make`.
pub async fn run_all<L, F, Fut>(mut make: F)
where
    L: Ledger,
    F: FnMut() -> Fut,
    Fut: Future<Output = L>,
{
    reserve_then_settle(&make().await).await;
    all_or_nothing(&make().await).await;
    limit_is_inclusive(&make().await).await;
    concurrent_admissions_never_overshoot(Arc::new(make().await)).await;
    reservations_expire_with_their_lease(&make().await).await;
    request_rate_window(&make().await).await;
    token_rate_is_corrected_on_settlement(&make().await).await;
    concurrency_slots(&make().await).await;
    settling_twice_applies_once(&make().await).await;
}

async fn reserve_then_settle(l: &impl Ledger) {
    let a = admission(
        "req-1",
        300,
        &[("b:t1:a", 1_000, LATER), ("b:t1:b", 5_000, LATER)],
        NOW,
    );
    assert_eq!(l.admit(&a).await.unwrap(), Ok(()));
    let states = l
        .budget_states(&["b:t1:a".into(), "b:t1:b".into()], NOW)
        .await
        .unwrap();
    assert_eq!(
        states,
        vec![
            BudgetState {
                spent: 0,
                reserved: 300
            };
            2
        ]
    );
    let after = l
        .settle(
            &a,
            Settlement {
                actual_micro_usd: 120,
                actual_tokens: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(after, vec![120, 120], "settle returns spend after, per budget");
    let states = l
        .budget_states(&["b:t1:a".into(), "b:t1:b".into(), "b:unknown".into()], NOW)
        .await
        .unwrap();
    assert_eq!(
        states[0],
        BudgetState {
            spent: 120,
            reserved: 0
        }
    );
    assert_eq!(states[2], BudgetState::default());
}

async fn all_or_nothing(l: &impl Ledger) {
    let fill = admission("fill", 900, &[("b:t2:b", 1_000, LATER)], NOW);
    l.admit(&fill).await.unwrap().unwrap();
    let a = admission(
        "req-2",
        200,
        &[("b:t2:a", 10_000, LATER), ("b:t2:b", 1_000, LATER)],
        NOW,
    );
    match l.admit(&a).await.unwrap() {
        Err(Refusal::Budget {
            index: 1,
            spent: 0,
            reserved: 900,
        }) => {}
        other => panic!("expected refusal on budget 1, got {other:?}"),
    }
    let s = l.budget_states(&["b:t2:a".into()], NOW).await.unwrap();
    assert_eq!(
        s[0],
        BudgetState::default(),
        "a refused admission charges nothing"
    );
}

async fn limit_is_inclusive(l: &impl Ledger) {
    let a = admission("req-3", 1_000, &[("b:t3", 1_000, LATER)], NOW);
    assert_eq!(l.admit(&a).await.unwrap(), Ok(()), "exactly the limit fits");
    let b = admission("req-4", 1, &[("b:t3", 1_000, LATER)], NOW);
    assert!(matches!(
        l.admit(&b).await.unwrap(),
        Err(Refusal::Budget { index: 0, .. })
    ));
    l.settle(
        &a,
        Settlement {
            actual_micro_usd: 400,
            actual_tokens: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        l.admit(&b).await.unwrap(),
        Ok(()),
        "settling below the estimate frees room"
    );
}

async fn concurrent_admissions_never_overshoot<L: Ledger>(l: Arc<L>) {
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let l = l.clone();
            tokio::spawn(async move {
                let a = admission(&format!("c-{i}"), 10, &[("b:t4", 205, LATER)], NOW);
                l.admit(&a).await.unwrap().is_ok()
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 20, "205 / 10 admits exactly 20");
    let s = l.budget_states(&["b:t4".into()], NOW).await.unwrap();
    assert_eq!(s[0].reserved, 200);
}

async fn reservations_expire_with_their_lease(l: &impl Ledger) {
    let mut a = admission("lost", 800, &[("b:t5", 1_000, LATER)], NOW);
    a.lease_ms = 100;
    l.admit(&a).await.unwrap().unwrap();
    let b = admission("next", 800, &[("b:t5", 1_000, LATER)], NOW + 50);
    assert!(
        l.admit(&b).await.unwrap().is_err(),
        "still reserved inside the lease"
    );
    let c = admission("next", 800, &[("b:t5", 1_000, LATER)], NOW + 101);
    assert_eq!(
        l.admit(&c).await.unwrap(),
        Ok(()),
        "a dead replica's reservation lapses"
    );
}

async fn request_rate_window(l: &impl Ledger) {
    let end = NOW + 40_000;
    for i in 0..3 {
        let a = with_rate(
            admission(&format!("r{i}"), 0, &[], NOW),
            "r:t6:rpm:1",
            RateKind::Requests,
            3,
            1,
            end,
        );
        assert_eq!(l.admit(&a).await.unwrap(), Ok(()));
    }
    let a = with_rate(
        admission("r3", 0, &[], NOW + 1_000),
        "r:t6:rpm:1",
        RateKind::Requests,
        3,
        1,
        end,
    );
    match l.admit(&a).await.unwrap() {
        Err(Refusal::Rate {
            index: 0,
            retry_after_ms,
        }) => assert_eq!(retry_after_ms, 39_000),
        other => panic!("expected a rate refusal, got {other:?}"),
    }
    let a = with_rate(
        admission("r4", 0, &[], end),
        "r:t6:rpm:2",
        RateKind::Requests,
        3,
        1,
        end + 60_000,
    );
    assert_eq!(l.admit(&a).await.unwrap(), Ok(()), "the next window starts empty");
}

async fn token_rate_is_corrected_on_settlement(l: &impl Ledger) {
    let end = NOW + 60_000;
    let t = |id: &str| {
        with_rate(
            admission(id, 0, &[], NOW),
            "r:t7:tpm:1",
            RateKind::Tokens,
            100,
            60,
            end,
        )
    };
    let first = t("t1");
    assert_eq!(l.admit(&first).await.unwrap(), Ok(()));
    assert_eq!(l.admit(&t("t2")).await.unwrap(), Ok(()), "60 used < 100");
    assert!(l.admit(&t("t3")).await.unwrap().is_err(), "120 used >= 100");
    l.settle(
        &first,
        Settlement {
            actual_micro_usd: 0,
            actual_tokens: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!(l.admit(&t("t4")).await.unwrap(), Ok(()), "corrected to 70 used");
}

async fn concurrency_slots(l: &impl Ledger) {
    let c = |id: &str, now: i64| {
        let mut a = with_rate(admission(id, 0, &[], now), "c:t8", RateKind::Concurrent, 2, 1, 0);
        a.lease_ms = 1_000;
        a
    };
    let a = c("s1", NOW);
    assert_eq!(l.admit(&a).await.unwrap(), Ok(()));
    assert_eq!(l.admit(&c("s2", NOW)).await.unwrap(), Ok(()));
    assert!(matches!(
        l.admit(&c("s3", NOW)).await.unwrap(),
        Err(Refusal::Rate { index: 0, .. })
    ));
    l.settle(&a, Settlement::default()).await.unwrap();
    assert_eq!(
        l.admit(&c("s4", NOW)).await.unwrap(),
        Ok(()),
        "settlement frees a slot"
    );
    assert!(l.admit(&c("s5", NOW)).await.unwrap().is_err());
    assert_eq!(
        l.admit(&c("s6", NOW + 1_001)).await.unwrap(),
        Ok(()),
        "leases lapse"
    );
}

/// A settlement retried (its reply was lost, or a journal write failed after the counters
/// moved) or replayed from the outbox is applied once: the request id is its idempotency id.
async fn settling_twice_applies_once(l: &impl Ledger) {
    let end = NOW + 60_000;
    let a = with_rate(
        admission("twice", 500, &[("b:t9", 10_000, LATER)], NOW),
        "r:t9:tpm:1",
        RateKind::Tokens,
        1_000,
        100,
        end,
    );
    let a = with_rate(a, "c:t9", RateKind::Concurrent, 1, 1, 0);
    l.admit(&a).await.unwrap().unwrap();
    let s = Settlement {
        actual_micro_usd: 300,
        actual_tokens: 40,
    };
    assert_eq!(l.settle(&a, s).await.unwrap(), vec![300]);
    assert_eq!(
        l.settle(&a, s).await.unwrap(),
        vec![300],
        "the repeat answers what the first did"
    );
    // A later replay (the outbox's clock moved on) is still the same settlement.
    let mut later = a.clone();
    later.now_ms = NOW + 5_000;
    assert_eq!(l.settle(&later, s).await.unwrap(), vec![300]);
    let st = l.budget_states(&["b:t9".into()], NOW).await.unwrap();
    assert_eq!(
        st[0],
        BudgetState {
            spent: 300,
            reserved: 0
        },
        "charged once"
    );
    // The token counter was corrected once (40 used, not 80 or -60), the slot freed once.
    let probe = |id: &str, amount: u64| {
        with_rate(
            admission(id, 0, &[], NOW),
            "r:t9:tpm:1",
            RateKind::Tokens,
            41,
            amount,
            end,
        )
    };
    assert_eq!(l.admit(&probe("p1", 1)).await.unwrap(), Ok(()), "40 used < 41");
    assert!(l.admit(&probe("p2", 1)).await.unwrap().is_err(), "41 used");
    // A different request id is a different settlement.
    let b = admission("other", 100, &[("b:t9", 10_000, LATER)], NOW);
    l.admit(&b).await.unwrap().unwrap();
    assert_eq!(l.settle(&b, s).await.unwrap(), vec![600]);
}
