//! The price table and exact integer cost.
//!
//! Money is integer pico-USD (1e-12 USD), never floating point: prices are read
//! exactly from the decimal text of the table ([`UsdPerToken`]) and a cost is a
//! sum of integer products ([`ModelPrice::cost`]). The table is in the shape of
//! LiteLLM's `model_prices_and_context_window.json`, the only maintained
//! machine-readable source; [`PriceTable::builtin`] ships a small one for the
//! current Anthropic models.

mod decimal;
mod litellm;
mod provider;

use std::collections::BTreeMap;
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

pub use decimal::{PriceValueError, UsdPerToken};
pub use litellm::{PriceEntry, SearchContextCost};
pub use provider::{PriceSource, ProviderPrice, ProviderPricing};

use crate::usage::Usage;

/// An amount of money in pico-USD (1e-12 USD).
///
/// `u128` because a product of two `u64` (tokens × pico-USD per token) always
/// fits; sums saturate instead of wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash, serde::Serialize)]
pub struct PicoUsd(pub u128);

impl PicoUsd {
    pub const ZERO: Self = Self(0);
    pub const PER_MICRO_USD: u128 = 1_000_000;
    pub const PER_USD: u128 = 1_000_000_000_000;

    pub fn from_micro_usd(micro: u64) -> Self {
        Self(u128::from(micro) * Self::PER_MICRO_USD)
    }

    /// The amount in micro-USD, rounded up (saturating at `u64::MAX`).
    pub fn micro_usd_ceil(self) -> u64 {
        u64::try_from(self.0.div_ceil(Self::PER_MICRO_USD)).unwrap_or(u64::MAX)
    }

    pub fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

impl Add for PicoUsd {
    type Output = Self;

    /// Saturating.
    fn add(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}

impl AddAssign for PicoUsd {
    fn add_assign(&mut self, other: Self) {
        *self = self.saturating_add(other);
    }
}

impl Sum for PicoUsd {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
    }
}

impl fmt::Display for PicoUsd {
    /// USD with six decimals, rounded up to the micro-USD: `$0.001234`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micro = self.0.div_ceil(Self::PER_MICRO_USD);
        write!(f, "${}.{:06}", micro / 1_000_000, micro % 1_000_000)
    }
}

/// Per-token prices of each billing class, in pico-USD per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Rates {
    pub input: u64,
    pub output: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

impl Rates {
    /// Every price passed through `f`.
    fn map(&self, f: impl Fn(u64) -> u64) -> Self {
        Self {
            input: f(self.input),
            output: f(self.output),
            cache_write_5m: f(self.cache_write_5m),
            cache_write_1h: f(self.cache_write_1h),
            cache_read: f(self.cache_read),
        }
    }

    /// Input and output prices, with the cache prices derived by Anthropic's
    /// base multipliers: 5-minute write 1.25x, 1-hour write 2x, read 0.1x of
    /// input (rounded up to a whole pico-USD).
    pub fn with_derived_cache(input: u64, output: u64) -> Self {
        Self {
            input,
            output,
            cache_write_5m: derived_cache_write_5m(input),
            cache_write_1h: derived_cache_write_1h(input),
            cache_read: derived_cache_read(input),
        }
    }
}

fn derived_cache_write_5m(input: u64) -> u64 {
    u64::try_from((u128::from(input) * 5).div_ceil(4)).unwrap_or(u64::MAX)
}

fn derived_cache_write_1h(input: u64) -> u64 {
    input.saturating_mul(2)
}

fn derived_cache_read(input: u64) -> u64 {
    input.div_ceil(10)
}

/// Prices that apply to a whole request whose prompt is longer than a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Tier {
    /// The tier applies when prompt tokens (input + cache writes + cache reads)
    /// are strictly more than this.
    pub above_prompt_tokens: u64,
    pub rates: Rates,
}

/// The price of one model: base rates, prompt-length tiers and web search.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelPrice {
    base: Rates,
    /// Ascending by threshold, thresholds distinct.
    tiers: Vec<Tier>,
    /// pico-USD per server-side web search request.
    web_search_request: u64,
    /// Most output tokens one response can have (LiteLLM's `max_output_tokens`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    /// The price at a regional (non-global) Vertex AI endpoint, when it differs: see
    /// [`ModelPrice::with_regional_uplift`].
    #[serde(skip_serializing_if = "Option::is_none")]
    regional_endpoint: Option<Box<ModelPrice>>,
}

impl ModelPrice {
    pub fn new(base: Rates) -> Self {
        Self {
            base,
            tiers: Vec::new(),
            web_search_request: 0,
            max_output_tokens: None,
            regional_endpoint: None,
        }
    }

    /// Sets the price at a regional (non-global) Vertex AI endpoint: every token price of
    /// the base and of each tier times `factor` (LiteLLM's
    /// `regional_endpoint_uplift_multiplier`, e.g. 1.1), rounded up to a whole pico-USD.
    /// Web search is billed per request and is not uplifted (as in LiteLLM). Call it after
    /// the tiers are set.
    pub fn with_regional_uplift(mut self, factor: &UsdPerToken) -> Self {
        let scale = |price: u64| factor.scale_ceil(price);
        let regional = ModelPrice {
            base: self.base.map(scale),
            tiers: self
                .tiers
                .iter()
                .map(|tier| Tier {
                    above_prompt_tokens: tier.above_prompt_tokens,
                    rates: tier.rates.map(scale),
                })
                .collect(),
            web_search_request: self.web_search_request,
            max_output_tokens: self.max_output_tokens,
            regional_endpoint: None,
        };
        self.regional_endpoint =
            (regional.base != self.base || regional.tiers != self.tiers).then(|| Box::new(regional));
        self
    }

    /// The price at a regional (non-global) Vertex AI endpoint: the uplifted price when the
    /// table states an uplift, else this price.
    pub fn at_regional_endpoint(&self) -> &ModelPrice {
        self.regional_endpoint.as_deref().unwrap_or(self)
    }

    /// Whether a regional endpoint costs more than this (global) price.
    pub fn has_regional_uplift(&self) -> bool {
        self.regional_endpoint.is_some()
    }

    /// Sets the most output tokens one response of the model can have.
    pub fn with_max_output_tokens(mut self, max: Option<u64>) -> Self {
        self.max_output_tokens = max;
        self
    }

    /// The most output tokens one response of the model can have, when the table says.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_output_tokens
    }

    /// Adds (or replaces) the tier for prompts longer than `above_prompt_tokens`.
    pub fn with_tier(mut self, above_prompt_tokens: u64, rates: Rates) -> Self {
        let tier = Tier {
            above_prompt_tokens,
            rates,
        };
        match self
            .tiers
            .binary_search_by_key(&above_prompt_tokens, |t| t.above_prompt_tokens)
        {
            Ok(at) => self.tiers[at] = tier,
            Err(at) => self.tiers.insert(at, tier),
        }
        self
    }

    pub fn with_web_search_request(mut self, pico_usd: u64) -> Self {
        self.web_search_request = pico_usd;
        self
    }

    pub fn base(&self) -> &Rates {
        &self.base
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// pico-USD per web search request.
    pub fn web_search_request(&self) -> u64 {
        self.web_search_request
    }

    /// The rates for a request with this many prompt tokens: those of the
    /// highest tier whose threshold is exceeded, else the base rates.
    pub fn rates_for(&self, prompt_tokens: u64) -> &Rates {
        self.tiers
            .iter()
            .rev()
            .find(|tier| prompt_tokens > tier.above_prompt_tokens)
            .map_or(&self.base, |tier| &tier.rates)
    }

    /// The exact cost of a response.
    pub fn cost(&self, usage: &Usage) -> PicoUsd {
        let rates = self.rates_for(usage.prompt_tokens());
        let line = |tokens: u64, price: u64| PicoUsd(u128::from(tokens) * u128::from(price));
        [
            line(usage.input_tokens, rates.input),
            line(usage.output_tokens, rates.output),
            line(usage.cache_write_5m_tokens, rates.cache_write_5m),
            line(usage.cache_write_1h_tokens, rates.cache_write_1h),
            line(usage.cache_read_tokens, rates.cache_read),
            line(usage.web_search_requests, self.web_search_request),
        ]
        .into_iter()
        .sum()
    }
}

/// A table that cannot be used, or a price in it that is not valid.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("price table is not a JSON object of model entries: {0}")]
    Json(#[from] serde_json::Error),
    #[error("price of model {model:?}, field {field}: {reason}")]
    InvalidPrice {
        model: String,
        field: String,
        reason: PriceValueError,
    },
}

/// Built-in prices of other providers' models, one file per API family
/// (`dataplane/prices/*.json`, LiteLLM's shape), overlaid on `default.json`.
const BUILTIN_EXTRA: &[&str] = &[
    include_str!("../../prices/openai.json"),
    include_str!("../../prices/gemini.json"),
];

/// Model name -> price.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    models: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// The table shipped in the binary (`dataplane/prices/default.json`).
    pub fn builtin() -> PriceTable {
        let mut table = Self::from_litellm_json(include_str!("../../prices/default.json").as_bytes())
            .expect("the built-in price table is valid (checked by a test)");
        for extra in BUILTIN_EXTRA {
            table.overlay(
                Self::from_litellm_json(extra.as_bytes())
                    .expect("the built-in price tables are valid (checked by a test)"),
            );
        }
        table
    }

    /// Adds or replaces one model's price.
    pub fn insert(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.models.insert(model.into(), price);
    }

    /// Merges `other` into this table; its entries win.
    pub fn overlay(&mut self, other: PriceTable) {
        self.models.extend(other.models);
    }

    /// The price of exactly this model name.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.models.get(model)
    }

    /// The price of a model as a provider names it: the exact name first, then
    /// the name without a provider prefix (`anthropic/`, Bedrock's
    /// `[region.]anthropic.`), Bedrock version suffix (`-v1:0`) or Vertex `@`
    /// date separator, then without a trailing `-YYYYMMDD` date. Returns the
    /// table's name for the model with its price.
    pub fn resolve(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        model_name_candidates(model)
            .into_iter()
            .find_map(|name| self.models.get_key_value(name.as_ref()))
            .map(|(name, price)| (name.as_str(), price))
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Model names in ascending order.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The largest output limit of any model in the table, when any entry states one.
    pub fn largest_output_limit(&self) -> Option<u64> {
        self.models
            .values()
            .filter_map(ModelPrice::max_output_tokens)
            .max()
    }
}

/// Names to look a model up by, most specific first.
fn model_name_candidates(model: &str) -> Vec<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;

    let mut names: Vec<Cow<'_, str>> = vec![Cow::Borrowed(model)];
    let mut base = model;
    if let Some(rest) = base.strip_prefix("anthropic/") {
        base = rest;
    }
    // Bedrock: `anthropic.claude-…` or `us.anthropic.claude-…`.
    if let Some(at) = base.find("anthropic.") {
        base = &base[at + "anthropic.".len()..];
    }
    // Bedrock version suffix `-v1:0` / `-v2`.
    if let Some(at) = base.rfind("-v") {
        let version = &base[at + 2..];
        let (major, minor) = version.split_once(':').unwrap_or((version, "0"));
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if numeric(major) && numeric(minor) {
            base = &base[..at];
        }
    }
    let base: Cow<'_, str> = if base.contains('@') {
        Cow::Owned(base.replace('@', "-"))
    } else {
        Cow::Borrowed(base)
    };
    if base != model {
        names.push(base.clone());
    }
    // A trailing snapshot date.
    if let Some((name, date)) = base.rsplit_once('-') {
        if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
            names.push(Cow::Owned(name.to_owned()));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPUS: &str = "claude-opus-4-6";
    const SONNET_TIERED: &str = "claude-sonnet-4-5";

    fn usage(input: u64, output: u64, write_5m: u64, write_1h: u64, read: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_write_5m_tokens: write_5m,
            cache_write_1h_tokens: write_1h,
            cache_read_tokens: read,
            web_search_requests: 0,
        }
    }

    #[test]
    fn builtin_table_parses_and_has_the_current_models() {
        let table = PriceTable::builtin();
        for model in [
            "claude-opus-4-8",
            "claude-opus-4-7",
            "claude-opus-4-6",
            "claude-opus-4-5",
            "claude-opus-4-5-20251101",
            "claude-sonnet-4-6",
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-20250514",
            "claude-sonnet-5",
            "claude-haiku-4-5",
            "claude-haiku-4-5-20251001",
        ] {
            assert!(table.get(model).is_some(), "{model} missing");
        }
        assert_eq!(table.len(), table.model_names().count());
        assert!(!table.is_empty());
        // Per MTok: input, 5m write, 1h write, read, output; pico-USD per token
        // is USD per MTok × 1e6.
        let families: [(&[&str], [u64; 5], bool); 5] = [
            (
                &[
                    "claude-opus-4-8",
                    "claude-opus-4-7",
                    "claude-opus-4-6",
                    "claude-opus-4-5",
                    "claude-opus-4-5-20251101",
                ],
                [5_000_000, 6_250_000, 10_000_000, 500_000, 25_000_000],
                false,
            ),
            (
                &["claude-sonnet-4-6"],
                [3_000_000, 3_750_000, 6_000_000, 300_000, 15_000_000],
                false,
            ),
            (
                &[
                    "claude-sonnet-4-5",
                    "claude-sonnet-4-5-20250929",
                    "claude-sonnet-4-20250514",
                    "claude-sonnet-4-0",
                ],
                [3_000_000, 3_750_000, 6_000_000, 300_000, 15_000_000],
                true,
            ),
            (
                &["claude-sonnet-5"],
                [2_000_000, 2_500_000, 4_000_000, 200_000, 10_000_000],
                false,
            ),
            (
                &["claude-haiku-4-5", "claude-haiku-4-5-20251001"],
                [1_000_000, 1_250_000, 2_000_000, 100_000, 5_000_000],
                false,
            ),
        ];
        for (models, [input, write_5m, write_1h, read, output], tiered) in families {
            for &model in models {
                let price = table.get(model).unwrap();
                assert_eq!(
                    *price.base(),
                    Rates {
                        input,
                        output,
                        cache_write_5m: write_5m,
                        cache_write_1h: write_1h,
                        cache_read: read
                    },
                    "{model}"
                );
                assert_eq!(
                    price.web_search_request(),
                    10_000_000_000,
                    "{model}: $10 per 1000 searches"
                );
                let expected_tiers = if tiered {
                    vec![Tier {
                        above_prompt_tokens: 200_000,
                        rates: Rates {
                            input: 6_000_000,
                            output: 22_500_000,
                            cache_write_5m: 7_500_000,
                            cache_write_1h: 12_000_000,
                            cache_read: 600_000,
                        },
                    }]
                } else {
                    vec![]
                };
                assert_eq!(price.tiers(), expected_tiers, "{model}");
            }
        }
    }

    #[test]
    fn opus_cost_of_every_class() {
        let table = PriceTable::builtin();
        let opus = table.get(OPUS).unwrap();
        // $5 / $25 / $6.25 / $10 / $0.50 per MTok.
        assert_eq!(opus.cost(&usage(1_000, 0, 0, 0, 0)), PicoUsd(5_000_000_000));
        assert_eq!(opus.cost(&usage(0, 2_000, 0, 0, 0)), PicoUsd(50_000_000_000));
        assert_eq!(opus.cost(&usage(0, 0, 3_000, 0, 0)), PicoUsd(18_750_000_000));
        assert_eq!(opus.cost(&usage(0, 0, 0, 4_000, 0)), PicoUsd(40_000_000_000));
        assert_eq!(opus.cost(&usage(0, 0, 0, 0, 5_000)), PicoUsd(2_500_000_000));
        let all = usage(1_000, 2_000, 3_000, 4_000, 5_000);
        assert_eq!(opus.cost(&all), PicoUsd(116_250_000_000));
        assert_eq!(opus.cost(&all).micro_usd_ceil(), 116_250);
        assert_eq!(opus.cost(&all).to_string(), "$0.116250");
        // Web search: $10 per 1000 requests.
        let searches = Usage {
            web_search_requests: 3,
            ..Usage::default()
        };
        assert_eq!(opus.cost(&searches), PicoUsd(30_000_000_000));
        // Opus has no prompt-length tier: a 900k prompt is still base price.
        assert_eq!(opus.cost(&usage(900_000, 0, 0, 0, 0)), PicoUsd(4_500_000_000_000));
        assert_eq!(opus.cost(&Usage::default()), PicoUsd::ZERO);
    }

    #[test]
    fn sonnet_cost_of_every_class_and_tier_boundary() {
        let table = PriceTable::builtin();
        let sonnet = table.get(SONNET_TIERED).unwrap();
        // Base: $3 / $15 / $3.75 / $6 / $0.30 per MTok.
        assert_eq!(sonnet.cost(&usage(1_000, 0, 0, 0, 0)), PicoUsd(3_000_000_000));
        assert_eq!(sonnet.cost(&usage(0, 1_000, 0, 0, 0)), PicoUsd(15_000_000_000));
        assert_eq!(sonnet.cost(&usage(0, 0, 1_000, 0, 0)), PicoUsd(3_750_000_000));
        assert_eq!(sonnet.cost(&usage(0, 0, 0, 1_000, 0)), PicoUsd(6_000_000_000));
        assert_eq!(sonnet.cost(&usage(0, 0, 0, 0, 1_000)), PicoUsd(300_000_000));

        // Exactly 200k prompt tokens is not above the threshold: base price.
        assert_eq!(
            sonnet.cost(&usage(200_000, 1_000, 0, 0, 0)),
            PicoUsd(600_000_000_000 + 15_000_000_000)
        );
        // One more token and the whole request is priced at the >200k tier:
        // $6 input, $22.50 output.
        assert_eq!(
            sonnet.cost(&usage(200_001, 1_000, 0, 0, 0)),
            PicoUsd(1_200_006_000_000 + 22_500_000_000)
        );

        // Cache tokens count toward the prompt length.
        let at_boundary = usage(0, 10, 100_000, 50_000, 50_000);
        assert_eq!(at_boundary.prompt_tokens(), 200_000);
        assert_eq!(
            sonnet.cost(&at_boundary),
            PicoUsd(375_000_000_000 + 300_000_000_000 + 15_000_000_000 + 150_000_000)
        );
        let above = usage(1, 10, 100_000, 50_000, 50_000);
        // $6 input, $7.50 5m write, $12 1h write, $0.60 read, $22.50 output.
        assert_eq!(
            sonnet.cost(&above),
            PicoUsd(6_000_000 + 750_000_000_000 + 600_000_000_000 + 30_000_000_000 + 225_000_000)
        );
    }

    #[test]
    fn highest_exceeded_tier_wins_and_missing_tier_classes_keep_base() {
        let json = br#"{
            "tiered": {
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 2e-06,
                "cache_read_input_token_cost": 1e-07,
                "input_cost_per_token_above_128k_tokens": 3e-06,
                "output_cost_per_token_above_128k_tokens": 4e-06,
                "input_cost_per_token_above_256k_tokens": 5e-06
            }
        }"#;
        let table = PriceTable::from_litellm_json(json).unwrap();
        let price = table.get("tiered").unwrap();
        assert_eq!(price.tiers().len(), 2);
        let one_each = |input: u64| usage(input, 1, 0, 0, 1);
        // Base: input 1e6, output 2e6, read 1e5 pico per token.
        assert_eq!(
            price.cost(&one_each(127_999)),
            PicoUsd(127_999 * 1_000_000 + 2_000_000 + 100_000)
        );
        // 128_001 prompt tokens (input + read): the 128k tier; read keeps base.
        assert_eq!(
            price.cost(&one_each(128_000)),
            PicoUsd(128_000 * 3_000_000 + 4_000_000 + 100_000)
        );
        // Above 256k: input from the 256k tier, output and read keep base
        // (a class a tier does not price keeps its base price).
        assert_eq!(
            price.cost(&one_each(256_000)),
            PicoUsd(256_000 * 5_000_000 + 2_000_000 + 100_000)
        );
        assert_eq!(price.rates_for(128_000), price.base());
        assert_eq!(price.rates_for(256_000).input, 3_000_000);
        assert_eq!(price.rates_for(256_001).input, 5_000_000);
    }

    #[test]
    fn cost_never_overflows() {
        let price = ModelPrice::new(Rates {
            input: u64::MAX,
            output: u64::MAX,
            cache_write_5m: u64::MAX,
            cache_write_1h: u64::MAX,
            cache_read: u64::MAX,
        })
        .with_web_search_request(u64::MAX);
        let max = Usage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            cache_write_5m_tokens: u64::MAX,
            cache_write_1h_tokens: u64::MAX,
            cache_read_tokens: u64::MAX,
            web_search_requests: u64::MAX,
        };
        assert_eq!(price.cost(&max), PicoUsd(u128::MAX));
        assert_eq!(price.cost(&max).micro_usd_ceil(), u64::MAX);
    }

    #[test]
    fn pico_usd_arithmetic_and_display() {
        assert_eq!(PicoUsd(0).micro_usd_ceil(), 0);
        assert_eq!(PicoUsd(1).micro_usd_ceil(), 1);
        assert_eq!(PicoUsd(1_000_000).micro_usd_ceil(), 1);
        assert_eq!(PicoUsd(1_000_001).micro_usd_ceil(), 2);
        assert_eq!(PicoUsd::from_micro_usd(1_234), PicoUsd(1_234_000_000));
        assert_eq!(PicoUsd(1_234_000_000).to_string(), "$0.001234");
        assert_eq!(PicoUsd(1_233_000_001).to_string(), "$0.001234");
        assert_eq!(PicoUsd(0).to_string(), "$0.000000");
        assert_eq!(
            PicoUsd(12 * PicoUsd::PER_USD + 500_000_000_000).to_string(),
            "$12.500000"
        );
        assert_eq!(PicoUsd(5) + PicoUsd(7), PicoUsd(12));
        assert_eq!(PicoUsd(u128::MAX) + PicoUsd(1), PicoUsd(u128::MAX));
        let mut total = PicoUsd(1);
        total += PicoUsd(2);
        assert_eq!(total, PicoUsd(3));
        assert_eq!(
            [PicoUsd(1), PicoUsd(2), PicoUsd(3)].into_iter().sum::<PicoUsd>(),
            PicoUsd(6)
        );
        assert_eq!(PicoUsd(1).saturating_sub(PicoUsd(2)), PicoUsd::ZERO);
        assert_eq!(serde_json::to_string(&PicoUsd(1_234)).unwrap(), "1234");
    }

    #[test]
    fn derived_cache_prices_round_up() {
        assert_eq!(
            Rates::with_derived_cache(3_000_000, 15_000_000),
            Rates {
                input: 3_000_000,
                output: 15_000_000,
                cache_write_5m: 3_750_000,
                cache_write_1h: 6_000_000,
                cache_read: 300_000,
            }
        );
        // 7 × 1.25 = 8.75 -> 9; 7 × 0.1 = 0.7 -> 1.
        let odd = Rates::with_derived_cache(7, 0);
        assert_eq!(
            (odd.cache_write_5m, odd.cache_write_1h, odd.cache_read),
            (9, 14, 1)
        );
        let max = Rates::with_derived_cache(u64::MAX, 0);
        assert_eq!((max.cache_write_5m, max.cache_write_1h), (u64::MAX, u64::MAX));
    }

    #[test]
    fn overlay_and_insert() {
        let mut table = PriceTable::builtin();
        let before = table.len();
        let overrides = PriceTable::from_litellm_json(
            br#"{"claude-opus-4-6": {"input_cost_per_token": "0.000004", "output_cost_per_token": "0.00002"},
                 "my-local-model": {"input_cost_per_token": 0, "output_cost_per_token": 0}}"#,
        )
        .unwrap();
        table.overlay(overrides);
        assert_eq!(table.len(), before + 1);
        let opus = table.get(OPUS).unwrap();
        assert_eq!(*opus.base(), Rates::with_derived_cache(4_000_000, 20_000_000));
        // The override replaces the whole entry: no web search price left.
        assert_eq!(opus.web_search_request(), 0);
        assert_eq!(
            table.get("my-local-model").unwrap().cost(&usage(1, 1, 1, 1, 1)),
            PicoUsd::ZERO
        );
        table.insert("x", ModelPrice::new(Rates::default()));
        assert!(table.get("x").is_some());
    }

    #[test]
    fn resolve_provider_model_names() {
        let table = PriceTable::builtin();
        let cases = [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
            ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929"),
            // Bedrock ids the table lists are their own entries (see `for_provider`); the
            // others are normalized.
            (
                "us.anthropic.claude-haiku-4-5-20251001-v1:0",
                "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            ),
            ("anthropic.claude-sonnet-4-0-20250514-v1:0", "claude-sonnet-4-0"),
            (
                "sa.anthropic.claude-haiku-4-5-20251001-v1:0",
                "claude-haiku-4-5-20251001",
            ),
            ("apac.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
            ("anthropic/claude-opus-4-7", "claude-opus-4-7"),
            ("claude-opus-4-6-20260101", "claude-opus-4-6"),
            ("claude-sonnet-5@20270101", "claude-sonnet-5"),
        ];
        for (asked, found) in cases {
            assert_eq!(table.resolve(asked).map(|(name, _)| name), Some(found), "{asked}");
        }
        for unknown in [
            "gpt-4o",
            "claude-opus-4-6x",
            "",
            "anthropic.",
            "-v1:0",
            "claude-opus-4-6-2026010",
        ] {
            assert_eq!(table.resolve(unknown).map(|(name, _)| name), None, "{unknown}");
        }
    }

    #[test]
    fn errors_name_model_and_field() {
        let err = PriceTable::from_litellm_json(
            br#"{"ok": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
                 "bad-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                               "cache_read_input_token_cost_above_200k_tokens": 1e-13}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "price of model \"bad-model\", field cache_read_input_token_cost_above_200k_tokens: \
             price 0.0000000000001 is not a whole number of pico-USD (1e-12 USD)"
        );
        assert!(matches!(
            PriceTable::from_litellm_json(b"[]"),
            Err(PriceError::Json(_))
        ));
        assert!(matches!(
            PriceTable::from_litellm_json(b"{"),
            Err(PriceError::Json(_))
        ));
    }
}
