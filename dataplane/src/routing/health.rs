//! Passive provider health: outlier ejection and retry budgets, per provider, per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::policy::document::RetryBudget;

/// Consecutive failures (connect error, timeout, 429, 5xx) that eject a provider.
pub const EJECT_AFTER_FAILURES: u32 = 5;
/// The first ejection's length; each further ejection without a success in between doubles
/// it, up to [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(10);
/// The longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Fallback tokens a provider can save up (in whole fallbacks): a long healthy stretch does
/// not buy a long storm later.
pub const MAX_SAVED_FALLBACKS: u64 = 10;

/// The health of every provider seen, by id (survives policy reloads).
#[derive(Debug, Default)]
pub struct Health {
    providers: RwLock<HashMap<String, Arc<ProviderHealth>>>,
}

impl Health {
    /// The health record of provider `id`, created on first use.
    pub fn provider(&self, id: &str) -> Arc<ProviderHealth> {
        if let Some(h) = self.providers.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return h.clone();
        }
        self.providers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }
}

/// One provider's passive health.
#[derive(Debug, Default)]
pub struct ProviderHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// Ejections since the last success (the backoff exponent).
    ejections: u32,
    ejected_until: Option<Instant>,
    /// Retry budget: saved fallbacks, in thousandths.
    tokens_milli: u64,
    /// The second (since `epoch`) the floor counter counts, and fallbacks in it.
    floor_second: u64,
    floor_used: u32,
    epoch: Option<Instant>,
}

impl ProviderHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the provider is ejected at `now`.
    pub fn ejected(&self, now: Instant) -> bool {
        self.state().ejected_until.is_some_and(|until| now < until)
    }

    /// A request is sent to the provider: its retry budget grows by `budget.percent` / 100.
    pub fn sent(&self, budget: RetryBudget) {
        let mut s = self.state();
        s.tokens_milli = (s.tokens_milli + u64::from(budget.percent) * 10).min(MAX_SAVED_FALLBACKS * 1000);
    }

    /// The provider answered usefully (any answer but 429 or 5xx).
    pub fn succeeded(&self) {
        let mut s = self.state();
        s.consecutive_failures = 0;
        s.ejections = 0;
    }

    /// The provider failed (connect error, timeout, 429 or 5xx) at `now`; returns whether
    /// this failure ejected it.
    pub fn failed(&self, now: Instant) -> bool {
        let mut s = self.state();
        s.consecutive_failures += 1;
        if s.consecutive_failures < EJECT_AFTER_FAILURES {
            return false;
        }
        s.consecutive_failures = 0;
        let factor = 1u32 << s.ejections.min(5);
        s.ejections = s.ejections.saturating_add(1);
        let length = (BASE_EJECTION * factor).min(MAX_EJECTION);
        s.ejected_until = Some(now + length);
        true
    }

    /// Whether a request that failed on this provider may fall back to the next target at
    /// `now`; if so, it is counted against the budget.
    pub fn may_fall_back(&self, budget: RetryBudget, now: Instant) -> bool {
        let mut s = self.state();
        let epoch = *s.epoch.get_or_insert(now);
        let second = now.saturating_duration_since(epoch).as_secs();
        if second != s.floor_second {
            s.floor_second = second;
            s.floor_used = 0;
        }
        if s.floor_used < budget.min_per_second {
            s.floor_used += 1;
            return true;
        }
        if s.tokens_milli >= 1000 {
            s.tokens_milli -= 1000;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: RetryBudget = RetryBudget {
        percent: 20,
        min_per_second: 2,
    };

    #[test]
    fn a_fallback_storm_is_held_to_the_budget() {
        let h = ProviderHealth::default();
        let t0 = Instant::now();
        // 100 requests in one second, every one failing: 2 from the floor, 10 saved at most
        // (20 earned, capped), so 12 fall back and 88 do not.
        for _ in 0..100 {
            h.sent(BUDGET);
        }
        let allowed = (0..100).filter(|_| h.may_fall_back(BUDGET, t0)).count();
        assert_eq!(allowed, 2 + MAX_SAVED_FALLBACKS as usize);
        // Next second: the floor again, nothing saved.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| h.may_fall_back(BUDGET, t1)).count();
        assert_eq!(allowed, 2);
        // Five more requests earn one fallback.
        for _ in 0..5 {
            h.sent(BUDGET);
        }
        let allowed = (0..100).filter(|_| h.may_fall_back(BUDGET, t1)).count();
        assert_eq!(allowed, 1);
    }

    #[test]
    fn consecutive_failures_eject_with_backoff_and_a_success_resets() {
        let h = ProviderHealth::default();
        let t0 = Instant::now();
        for _ in 0..EJECT_AFTER_FAILURES - 1 {
            assert!(!h.failed(t0));
        }
        assert!(!h.ejected(t0));
        assert!(h.failed(t0), "the fifth consecutive failure ejects");
        assert!(h.ejected(t0 + BASE_EJECTION - Duration::from_millis(1)));
        assert!(!h.ejected(t0 + BASE_EJECTION));
        // Failing again right after: twice as long.
        let t1 = t0 + BASE_EJECTION;
        for _ in 0..EJECT_AFTER_FAILURES {
            h.failed(t1);
        }
        assert!(h.ejected(t1 + BASE_EJECTION * 2 - Duration::from_millis(1)));
        assert!(!h.ejected(t1 + BASE_EJECTION * 2));
        // A success in between failures resets the count and the backoff.
        let t2 = t1 + MAX_EJECTION;
        h.succeeded();
        for _ in 0..EJECT_AFTER_FAILURES - 1 {
            h.failed(t2);
        }
        h.succeeded();
        assert!(!h.failed(t2));
        assert!(!h.ejected(t2));
    }

    #[test]
    fn records_are_shared_by_id() {
        let health = Health::default();
        let a = health.provider("a");
        a.failed(Instant::now());
        assert!(Arc::ptr_eq(&a, &health.provider("a")));
        assert!(!Arc::ptr_eq(&a, &health.provider("b")));
    }
}
