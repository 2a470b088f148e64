//! Turning one request into a ledger [`Admission`]: which budget windows and rate counters
//! apply, and the cost estimate reserved before forwarding.
//!
//! # The estimate
//! Input tokens are estimated as `ceil(body bytes / 3)`: JSON syntax, keys and escapes make a
//! Messages body longer than its tokens (English text and code run about 4 bytes per token),
//! so this over-estimates except for unusual content. Output tokens are what responses of this
//! key and model actually need: the 95th percentile of the output of their recent complete
//! responses ([`super::history`], per process; the model's across keys while the key has too
//! few), never more than `min(max_tokens, estimate_output_tokens_cap)` (cap 16384 by default),
//! which is also the estimate until something is learned. Both are priced at the model's
//! rates (input at the base input rate, which also covers 5-minute cache writes of a prompt
//! up to 1.25 x its estimate; the prompt-length tier applies when the estimate is above it).
//!
//! # Refusals
//! The ledger admits only while `spent + reserved + estimate <= limit`, atomically. A refusal
//! is a 402 only when the settled spend leaves no room (`spent + estimate > limit`); when the
//! room is held by the reservations of requests in flight, it is a 429 with a short
//! `retry-after`: they settle, usually for less than they reserved, and the room comes back.
//!
//! # The overshoot bound
//! The spend of a window can exceed its limit by at most the sum, over requests in flight
//! when it is crossed, of `max(0, actual - estimate)`: zero whenever the estimates hold. For
//! one request that is at most its output beyond the estimate,
//! `(max_tokens - estimated output) x output rate`, plus its input beyond `bytes / 3`;
//! `max_tokens` is at most the largest output limit of any model in the price table (a larger
//! one is refused), so it is finite. Learned estimates make it matter only for a response
//! longer than 95% of the key's recent ones on that model.

use std::sync::Arc;

use jiff::Timestamp;

use super::window::{Window, window_at};
use crate::ledger::{Admission, BudgetCharge, RateCharge, RateKind};
use crate::policy::document::{BudgetScope, ProviderKind, RateLimits};
use crate::policy::{CompiledBudget, KeyEntry, Snapshot};
use crate::pricing::{ModelPrice, PriceSource, PriceTable, ProviderPricing};
use crate::usage::Usage;

/// Default output tokens reserved at most.
pub const DEFAULT_OUTPUT_CAP: u64 = 16_384;
/// `max_tokens` accepted at most when the price table states no model's output limit.
pub const DEFAULT_OUTPUT_CEILING: u64 = 128_000;
/// Output tokens assumed when a request sets no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4_096;
/// How long a reservation or concurrency slot outlives a replica that never settles it.
pub const LEASE_MS: i64 = 15 * 60 * 1000;
/// Budget counters outlive their window by this much, for status reads after a reset.
const COUNTER_GRACE_MS: i64 = 3_600_000;

/// A budget an admission charges, with what a refusal message needs.
#[derive(Debug, Clone)]
pub struct PlannedBudget {
    /// Budget id.
    pub id: String,
    /// Its scope.
    pub scope: BudgetScope,
    /// Its limit.
    pub limit_micro_usd: u64,
    /// Period name (`daily`, `monthly`, `rolling 3600s`).
    pub period: String,
    /// The current window.
    pub window: Window,
    /// Soft thresholds, percent.
    pub thresholds: Vec<u8>,
}

/// A rate limit an admission charges.
#[derive(Debug, Clone)]
pub struct PlannedRate {
    /// `key` or `team`.
    pub scope_kind: &'static str,
    /// Key id or team id.
    pub scope_name: String,
    /// The limit.
    pub limit: u64,
    /// Kind.
    pub kind: RateKind,
}

/// The admission and the facts behind each of its charges (same order).
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the ledger sees.
    pub admission: Admission,
    /// One per `admission.budgets`.
    pub budgets: Vec<PlannedBudget>,
    /// One per `admission.rates`.
    pub rates: Vec<PlannedRate>,
    /// The estimate a refusal is judged by: money really gone (402) when even this does not
    /// fit the settled spend, else room held in flight (429). The learned estimate, when the
    /// request reserves its worst case only because its key already has
    /// [`super::history::MAX_OPTIMISTIC_IN_FLIGHT`] requests in flight on a learned one.
    pub money_estimate_micro_usd: u64,
}

impl Plan {
    /// Whether any limit applies (otherwise the ledger is not consulted).
    pub fn is_empty(&self) -> bool {
        self.admission.budgets.is_empty() && self.admission.rates.is_empty()
    }
}

/// The price of `upstream` (the model id sent to `provider`), requested as `requested`, and
/// whether it is the model's own price:
/// - on a cloud provider (Bedrock, Vertex AI, Foundry), the entry under the provider's own id
///   ([`PriceTable::for_provider`]: `us.anthropic.…`, `vertex_ai/…@…`, with its regional
///   surcharge); without one, the Anthropic price of the model (not its own: regional and
///   geographic surcharges are unknown), else of the requested name;
/// - on the Anthropic API (or a gateway), the upstream id, then the requested name;
/// - else the most expensive model in the table, so an unpriced model cannot escape a budget.
pub fn price_for<'a>(
    prices: &'a PriceTable,
    provider: ProviderPricing<'_>,
    upstream: &str,
    requested: &str,
) -> (Option<&'a ModelPrice>, bool) {
    match provider.kind {
        ProviderKind::Bedrock | ProviderKind::Vertex | ProviderKind::Foundry | ProviderKind::Gemini => {
            if let Some(p) = prices.for_provider(provider, upstream) {
                return (Some(p.price), p.source == PriceSource::Provider);
            }
            if let Some(p) = prices.get(requested) {
                return (Some(p), false);
            }
        }
        ProviderKind::Anthropic | ProviderKind::Openai | ProviderKind::Tollgate => {
            if let Some(p) = prices.get(upstream).or_else(|| prices.get(requested)) {
                return (Some(p), true);
            }
        }
    }
    let dearest = prices
        .model_names()
        .filter_map(|m| prices.get(m))
        .max_by_key(|p| p.base().output);
    (dearest, false)
}

/// The output tokens reserved for a request: `max_tokens` ([`DEFAULT_MAX_TOKENS`] when
/// absent) capped at `cap`, lowered to `typical` (what this key and model recently needed)
/// when known.
pub fn output_estimate(max_tokens: Option<u64>, cap: u64, typical: Option<u64>) -> u64 {
    let ceiling = max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).min(cap);
    typical.map_or(ceiling, |t| t.min(ceiling))
}

/// A request's estimate: tokens, and their cost in micro-USD (rounded up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// `ceil(body bytes / 3)`.
    pub input_tokens: u64,
    /// See [`output_estimate`].
    pub output_tokens: u64,
    /// Input and output at the model's rates.
    pub cost_micro_usd: u64,
    /// The input alone.
    pub input_cost_micro_usd: u64,
}

/// The estimate of a request of `body_len` bytes reserving `output_tokens`.
pub fn estimate(price: Option<&ModelPrice>, body_len: usize, output_tokens: u64) -> Estimate {
    let input_tokens = (body_len as u64).div_ceil(3);
    let usage = Usage {
        input_tokens,
        output_tokens,
        ..Default::default()
    };
    let input = Usage {
        output_tokens: 0,
        ..usage
    };
    let cost = |u: &Usage| price.map_or(0, |p| p.cost(u).micro_usd_ceil());
    Estimate {
        input_tokens,
        output_tokens,
        cost_micro_usd: cost(&usage),
        input_cost_micro_usd: cost(&input),
    }
}

/// What a request is charged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `/v1/messages`: every budget and rate limit.
    Messages,
    /// `/v1/messages/count_tokens`: free, so no budget and no tokens per minute; requests
    /// per minute and concurrency count it like any request.
    CountTokens,
}

/// Builds the plan for one request at `now`.
pub fn plan(
    snapshot: &Snapshot,
    key: &Arc<KeyEntry>,
    request_id: &str,
    request_kind: RequestKind,
    estimate_micro_usd: u64,
    estimated_tokens: u64,
    now: Timestamp,
) -> Plan {
    let now_ms = now.as_millisecond();
    let mut budgets = Vec::new();
    let mut charges = Vec::new();
    let charged_budgets = snapshot
        .budgets_for(key)
        .filter(|_| request_kind == RequestKind::Messages);
    for b in charged_budgets {
        let Ok(window) = window_at(&b.budget.period, &b.tz, now) else {
            continue;
        };
        charges.push(BudgetCharge {
            counter: format!("b:{}:{}", b.budget.id, window.start.as_second()),
            limit_micro_usd: b.budget.limit_micro_usd,
            expires_at_ms: window.end.as_millisecond() + COUNTER_GRACE_MS,
        });
        budgets.push(planned_budget(b, window));
    }
    let mut rates = Vec::new();
    let mut rate_charges = Vec::new();
    let mut add = |scope_kind: &'static str, name: &str, limits: &RateLimits| {
        let minute_start = now_ms.div_euclid(60_000) * 60_000;
        let minute_end = minute_start + 60_000;
        let specs = [
            (RateKind::Requests, limits.requests_per_minute, "rpm", 1),
            (
                RateKind::Tokens,
                limits.tokens_per_minute,
                "tpm",
                estimated_tokens,
            ),
            (RateKind::Concurrent, limits.concurrent, "conc", 1),
        ];
        for (kind, limit, tag, amount) in specs {
            let counted = request_kind == RequestKind::Messages || kind != RateKind::Tokens;
            let Some(limit) = limit.filter(|_| counted) else {
                continue;
            };
            let counter = match kind {
                RateKind::Concurrent => format!("c:{scope_kind}:{name}"),
                _ => format!("r:{scope_kind}:{name}:{tag}:{}", minute_start / 60_000),
            };
            rate_charges.push(RateCharge {
                counter,
                kind,
                limit,
                amount,
                window_end_ms: minute_end,
            });
            rates.push(PlannedRate {
                scope_kind,
                scope_name: name.to_owned(),
                limit,
                kind,
            });
        }
    };
    if let Some(l) = &key.rate_limits {
        add("key", &key.id, l);
    }
    if let Some(team) = &key.team {
        if let Some(l) = snapshot.team_rate_limits(team) {
            add("team", team, l);
        }
    }
    Plan {
        admission: Admission {
            request_id: request_id.to_owned(),
            estimate_micro_usd,
            budgets: charges,
            rates: rate_charges,
            now_ms,
            lease_ms: LEASE_MS,
        },
        budgets,
        rates,
        money_estimate_micro_usd: estimate_micro_usd,
    }
}

fn planned_budget(b: &CompiledBudget, window: Window) -> PlannedBudget {
    use crate::policy::document::BudgetPeriod as P;
    let period = match &b.budget.period {
        P::Daily => "daily".to_owned(),
        P::Weekly => "weekly".to_owned(),
        P::Monthly => "monthly".to_owned(),
        P::Yearly => "yearly".to_owned(),
        P::Rolling { seconds } => format!("{seconds}-second"),
    };
    PlannedBudget {
        id: b.budget.id.clone(),
        scope: b.budget.scope.clone(),
        limit_micro_usd: b.budget.limit_micro_usd,
        period,
        window,
        thresholds: b.budget.thresholds.clone(),
    }
}

/// Thresholds (percent) crossed by moving a budget's spend from `before` to `after`.
pub fn crossed_thresholds(thresholds: &[u8], limit: u64, before: u64, after: u64) -> Vec<u8> {
    thresholds
        .iter()
        .copied()
        .filter(|t| {
            let mark = (u128::from(limit) * u128::from(*t)).div_ceil(100);
            u128::from(before) < mark && u128::from(after) >= mark
        })
        .collect()
}

/// Formats micro-USD as dollars: `$12.345678` trimmed to cents when exact.
pub fn dollars(micro: u64) -> String {
    let (whole, frac) = (micro / 1_000_000, micro % 1_000_000);
    if frac % 10_000 == 0 {
        format!("${whole}.{:02}", frac / 10_000)
    } else {
        format!("${whole}.{frac:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::*;
    use crate::policy::load::LoadedDocument;
    use crate::policy::{SystemCredentials, hash_key};

    fn snapshot() -> Snapshot {
        let budget = |id: &str, kind: ScopeKind, name: &str, period: BudgetPeriod| Budget {
            id: id.into(),
            scope: BudgetScope {
                kind,
                name: name.into(),
            },
            limit_micro_usd: 5_000_000,
            period,
            time_zone: None,
            thresholds: vec![50, 80, 100],
        };
        let doc = PolicyDocument {
            version: 1,
            organization: Some(Organization { name: "acme".into() }),
            teams: vec![
                Team {
                    id: "platform".into(),
                    rate_limits: Some(RateLimits {
                        requests_per_minute: Some(100),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Team {
                    id: "other".into(),
                    ..Default::default()
                },
            ],
            keys: vec![VirtualKey {
                id: "k1".into(),
                sha256: hex::encode(hash_key("vk")),
                user: Some("alice".into()),
                team: Some("platform".into()),
                enabled: true,
                rate_limits: Some(RateLimits {
                    requests_per_minute: Some(10),
                    tokens_per_minute: Some(1000),
                    concurrent: Some(2),
                }),
                ..Default::default()
            }],
            budgets: vec![
                budget("key-daily", ScopeKind::Key, "k1", BudgetPeriod::Daily),
                budget(
                    "org-month",
                    ScopeKind::Organization,
                    "acme",
                    BudgetPeriod::Monthly,
                ),
                budget("other-team", ScopeKind::Team, "other", BudgetPeriod::Daily),
                budget("team-week", ScopeKind::Team, "platform", BudgetPeriod::Weekly),
                budget("user-year", ScopeKind::User, "alice", BudgetPeriod::Yearly),
            ],
            ..Default::default()
        };
        let loaded = LoadedDocument {
            document: doc,
            revision: "r".into(),
        };
        Snapshot::compile(loaded, &PriceTable::builtin(), &SystemCredentials).unwrap()
    }

    #[test]
    fn every_applicable_budget_and_rate_is_charged_widest_first() {
        let s = snapshot();
        let key = s.key("vk").unwrap().clone();
        let now: Timestamp = "2026-11-29T19:42:00Z".parse().unwrap();
        let p = plan(&s, &key, "req-1", RequestKind::Messages, 1234, 500, now);
        let ids: Vec<&str> = p.budgets.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["org-month", "team-week", "user-year", "key-daily"]);
        assert_eq!(
            p.admission.budgets[0].counter,
            format!(
                "b:org-month:{}",
                "2026-11-01T00:00:00Z".parse::<Timestamp>().unwrap().as_second()
            )
        );
        assert!(p.admission.budgets.iter().all(|b| b.limit_micro_usd == 5_000_000));
        let kinds: Vec<(&str, RateKind, u64)> =
            p.rates.iter().map(|r| (r.scope_kind, r.kind, r.limit)).collect();
        assert_eq!(
            kinds,
            [
                ("key", RateKind::Requests, 10),
                ("key", RateKind::Tokens, 1000),
                ("key", RateKind::Concurrent, 2),
                ("team", RateKind::Requests, 100)
            ]
        );
        assert_eq!(p.admission.rates[1].amount, 500);
        assert_eq!(
            p.admission.rates[0].window_end_ms,
            "2026-11-29T19:43:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_millisecond()
        );
        assert_eq!(p.admission.estimate_micro_usd, 1234);
    }

    #[test]
    fn estimate_is_an_upper_bound_for_typical_requests() {
        let prices = PriceTable::builtin();
        let (p, priced) = price_for(
            &prices,
            ProviderPricing::ANTHROPIC,
            "claude-sonnet-4-5",
            "gw-sonnet",
        );
        assert!(priced);
        // 76 KB body, max_tokens 64000 capped at 16384: 25,446 input + 16,384 output tokens.
        let out = output_estimate(Some(64_000), DEFAULT_OUTPUT_CAP, None);
        assert_eq!(out, 16_384);
        let e = estimate(p, 76_337, out);
        assert_eq!(e.input_tokens, 25_446);
        // 25,446 x $3/M + 16,384 x $15/M = $0.076338 + $0.24576
        assert_eq!(e.cost_micro_usd, 76_338 + 245_760);
        assert_eq!(e.input_cost_micro_usd, 76_338);
        let e = estimate(p, 300, output_estimate(Some(100), DEFAULT_OUTPUT_CAP, None));
        assert_eq!(e.cost_micro_usd, 300 + 1_500, "100 x $3/M + 100 x $15/M");
    }

    #[test]
    fn the_output_estimate_learns_but_never_exceeds_max_tokens_or_the_cap() {
        assert_eq!(
            output_estimate(None, DEFAULT_OUTPUT_CAP, None),
            DEFAULT_MAX_TOKENS
        );
        assert_eq!(output_estimate(Some(32_000), DEFAULT_OUTPUT_CAP, Some(700)), 700);
        assert_eq!(output_estimate(Some(500), DEFAULT_OUTPUT_CAP, Some(700)), 500);
        assert_eq!(output_estimate(Some(64_000), 1_000, Some(9_000)), 1_000);
    }

    #[test]
    fn count_tokens_charges_no_budget_and_no_tokens() {
        let s = snapshot();
        let key = s.key("vk").unwrap().clone();
        let now: Timestamp = "2026-11-29T19:42:00Z".parse().unwrap();
        let p = plan(&s, &key, "req-1", RequestKind::CountTokens, 0, 500, now);
        assert!(p.budgets.is_empty() && p.admission.budgets.is_empty());
        let kinds: Vec<(&str, RateKind)> = p.rates.iter().map(|r| (r.scope_kind, r.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("key", RateKind::Requests),
                ("key", RateKind::Concurrent),
                ("team", RateKind::Requests)
            ]
        );
    }

    #[test]
    fn unpriced_models_are_estimated_at_the_dearest_price() {
        let prices = PriceTable::builtin();
        let (p, priced) = price_for(
            &prices,
            ProviderPricing::ANTHROPIC,
            "mystery-model",
            "mystery-model",
        );
        assert!(!priced);
        let dearest_output = prices
            .model_names()
            .filter_map(|m| prices.get(m))
            .map(|p| p.base().output)
            .max();
        assert_eq!(p.map(|p| p.base().output), dearest_output);
    }

    #[test]
    fn thresholds_cross_once() {
        assert_eq!(crossed_thresholds(&[50, 80, 100], 1000, 400, 500), vec![50]);
        assert_eq!(crossed_thresholds(&[50, 80, 100], 1000, 500, 900), vec![80]);
        assert_eq!(
            crossed_thresholds(&[50, 80, 100], 1000, 0, 2000),
            vec![50, 80, 100]
        );
        assert!(crossed_thresholds(&[50], 1000, 600, 700).is_empty());
    }

    #[test]
    fn dollars_format() {
        assert_eq!(dollars(5_000_000), "$5.00");
        assert_eq!(dollars(1_234_567), "$1.234567");
        assert_eq!(dollars(10_000), "$0.01");
    }
}
