//! How many refusals of unauthenticated requests become records of their own: anyone who can
//! reach the port can send those, so they pass a token bucket ([`REFUSALS_PER_SEC`] a second,
//! bursts of [`REFUSAL_BURST`]); the rest are counted by reason and written as one
//! `denials_suppressed` record a second. Pure: the caller passes the time.

use std::collections::BTreeMap;
use std::time::Instant;

use super::events::DenialsSuppressed;

/// Unauthenticated refusals recorded individually per second, sustained.
pub const REFUSALS_PER_SEC: u64 = 50;

/// Unauthenticated refusals recorded individually in a burst.
pub const REFUSAL_BURST: u64 = 200;

/// A token bucket for refusal records, and what it held back.
#[derive(Debug)]
pub struct RefusalLimiter {
    /// Tokens, in thousandths.
    milli_tokens: u64,
    refilled: Option<Instant>,
    suppressed: BTreeMap<&'static str, u64>,
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        Self {
            milli_tokens: REFUSAL_BURST * 1000,
            refilled: None,
            suppressed: BTreeMap::new(),
            since: None,
            until: None,
        }
    }
}

impl RefusalLimiter {
    /// Whether a refusal for `reason` at `now` (`at` on the wall clock) gets a record of its
    /// own; if not, it is counted for the next summary.
    pub fn admit(&mut self, now: Instant, at: jiff::Timestamp, reason: &'static str) -> bool {
        if let Some(last) = self.refilled {
            let ms = u64::try_from(now.saturating_duration_since(last).as_millis()).unwrap_or(u64::MAX);
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(ms.saturating_mul(REFUSALS_PER_SEC))
                .min(REFUSAL_BURST * 1000);
        }
        self.refilled = Some(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return true;
        }
        *self.suppressed.entry(reason).or_default() += 1;
        self.since.get_or_insert(at);
        self.until = Some(at);
        false
    }

    /// The summary of what was held back since the last one, if anything was.
    pub fn take_summary(&mut self) -> Option<DenialsSuppressed> {
        if self.suppressed.is_empty() {
            return None;
        }
        let reasons = std::mem::take(&mut self.suppressed);
        Some(DenialsSuppressed {
            suppressed: reasons.values().sum(),
            reasons,
            since: self.since.take().map(|t| t.to_string()).unwrap_or_default(),
            until: self.until.take().map(|t| t.to_string()).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_and_the_rest_counted() {
        let mut l = RefusalLimiter::default();
        let t0 = Instant::now();
        let at = jiff::Timestamp::UNIX_EPOCH;
        let allowed = (0..1000).filter(|_| l.admit(t0, at, "unknown_key")).count() as u64;
        assert_eq!(allowed, REFUSAL_BURST);
        let s = l.take_summary().unwrap();
        assert_eq!(s.suppressed, 1000 - REFUSAL_BURST);
        assert_eq!(s.reasons["unknown_key"], 1000 - REFUSAL_BURST);
        assert!(l.take_summary().is_none(), "each refusal is summarised once");
        // A second later, a second's worth is allowed again.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..1000).filter(|_| l.admit(t1, at, "missing_key")).count() as u64;
        assert_eq!(allowed, REFUSALS_PER_SEC);
        // A long quiet spell refills only to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        let allowed = (0..1000).filter(|_| l.admit(t2, at, "not_found")).count() as u64;
        assert_eq!(allowed, REFUSAL_BURST);
        let s = l.take_summary().unwrap();
        assert_eq!(s.reasons.len(), 2);
        assert_eq!(s.suppressed, 2000 - REFUSALS_PER_SEC - REFUSAL_BURST);
    }
}
