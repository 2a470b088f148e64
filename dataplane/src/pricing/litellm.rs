//! LiteLLM's price-table shape (`model_prices_and_context_window.json`): the
//! exact reader of the JSON file, and [`PriceEntry`], the same entry as a typed
//! value the policy document can embed to override prices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ModelPrice, PriceError, PriceTable, PriceValueError, Rates, UsdPerToken};
use super::{derived_cache_read, derived_cache_write_1h, derived_cache_write_5m};

/// LiteLLM's documentation entry, with zero prices; not a model.
const SAMPLE_SPEC: &str = "sample_spec";
const SEARCH_FIELD: &str = "search_context_cost_per_query";
/// LiteLLM's output limit field; `max_tokens` is its legacy name.
const MAX_OUTPUT_FIELDS: [&str; 2] = ["max_output_tokens", "max_tokens"];
/// LiteLLM's factor on every token price at a regional (non-global) Vertex AI endpoint.
const REGIONAL_UPLIFT_FIELD: &str = "regional_endpoint_uplift_multiplier";

/// One model's prices in LiteLLM's shape, USD per token. Prompt-length tiers
/// are fields named `<price field>_above_<N>k_tokens` (e.g.
/// `input_cost_per_token_above_200k_tokens`) and live in `extra`, with every
/// other LiteLLM field, which is ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PriceEntry {
    /// USD per uncached input token. An entry without it is not a model price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_cost_per_token: Option<UsdPerToken>,
    /// USD per output token. An entry without it is not a model price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_cost_per_token: Option<UsdPerToken>,
    /// USD per 5-minute cache write token; default 1.25x input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_token_cost: Option<UsdPerToken>,
    /// USD per 1-hour cache write token; default 2x input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_token_cost_above_1hr: Option<UsdPerToken>,
    /// USD per cache read token; default 0.1x input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_token_cost: Option<UsdPerToken>,
    /// USD per server-side web search request (the highest of the sizes given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_context_cost_per_query: Option<SearchContextCost>,
    /// Prompt-length tier prices (`<price field>_above_<N>k_tokens`: the whole
    /// request is priced at the tier when its prompt is more than N×1000
    /// tokens) and any other LiteLLM field (ignored).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// LiteLLM's web search price, USD per request by search context size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchContextCost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_context_size_low: Option<UsdPerToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_context_size_medium: Option<UsdPerToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_context_size_high: Option<UsdPerToken>,
}

impl PriceTable {
    /// Reads a table in the shape of LiteLLM's
    /// `model_prices_and_context_window.json`. Prices are read exactly from the
    /// numbers' decimal text. Entries without both an input and an output price
    /// per token (image models, embeddings, `sample_spec`) are skipped; a price
    /// in a kept entry that is negative, not a number, or not a whole number of
    /// pico-USD fails the whole table.
    pub fn from_litellm_json(bytes: &[u8]) -> Result<PriceTable, PriceError> {
        let (table, errors) = Self::from_litellm_json_lenient(bytes)?;
        match errors.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(table),
        }
    }

    /// Like [`PriceTable::from_litellm_json`], but an entry with an invalid price
    /// is left out and reported instead of failing the table: for a large
    /// third-party file, where one odd model should not block the others.
    pub fn from_litellm_json_lenient(bytes: &[u8]) -> Result<(PriceTable, Vec<PriceError>), PriceError> {
        let entries: BTreeMap<String, &RawValue> = serde_json::from_slice(bytes)?;
        let mut table = PriceTable::default();
        let mut errors = Vec::new();
        for (model, raw) in entries {
            if model == SAMPLE_SPEC {
                continue;
            }
            let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get()) else {
                continue; // not an object: not a model entry
            };
            let mut prices = EntryPrices::new(&model);
            for (field, raw) in fields {
                if MAX_OUTPUT_FIELDS.contains(&field.as_str()) {
                    prices.output_limit(&field, serde_json::from_str::<u64>(raw.get()).ok());
                } else if field == REGIONAL_UPLIFT_FIELD {
                    prices.regional_uplift(UsdPerToken::from_json_text(raw.get()));
                } else if field == SEARCH_FIELD {
                    if let Ok(sizes) = serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get()) {
                        for (size, raw) in sizes {
                            prices.push(
                                format!("{field}.{size}"),
                                Target::WebSearch,
                                UsdPerToken::from_json_text(raw.get()),
                            );
                        }
                    }
                } else if let Some(target) = price_field(&field) {
                    prices.push(
                        field,
                        Target::Price(target),
                        UsdPerToken::from_json_text(raw.get()),
                    );
                }
            }
            match prices.build() {
                Ok(Some(price)) => table.insert(model, price),
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
        Ok((table, errors))
    }

    /// Builds a table from typed entries (e.g. the policy document's price
    /// overrides), with the same rules as [`PriceTable::from_litellm_json`].
    pub fn from_entries(entries: &BTreeMap<String, PriceEntry>) -> Result<PriceTable, PriceError> {
        let mut table = PriceTable::default();
        for (model, entry) in entries {
            let mut prices = EntryPrices::new(model);
            let known = [
                ("input_cost_per_token", Class::Input, entry.input_cost_per_token),
                (
                    "output_cost_per_token",
                    Class::Output,
                    entry.output_cost_per_token,
                ),
                (
                    "cache_creation_input_token_cost",
                    Class::CacheWrite5m,
                    entry.cache_creation_input_token_cost,
                ),
                (
                    "cache_creation_input_token_cost_above_1hr",
                    Class::CacheWrite1h,
                    entry.cache_creation_input_token_cost_above_1hr,
                ),
                (
                    "cache_read_input_token_cost",
                    Class::CacheRead,
                    entry.cache_read_input_token_cost,
                ),
            ];
            for (field, class, value) in known {
                if let Some(value) = value {
                    prices.push(
                        field.to_owned(),
                        Target::Price(PriceField::Base(class)),
                        Ok(Some(value)),
                    );
                }
            }
            if let Some(search) = &entry.search_context_cost_per_query {
                let sizes = [
                    ("search_context_size_low", search.search_context_size_low),
                    ("search_context_size_medium", search.search_context_size_medium),
                    ("search_context_size_high", search.search_context_size_high),
                ];
                for (size, value) in sizes {
                    prices.push(format!("{SEARCH_FIELD}.{size}"), Target::WebSearch, Ok(value));
                }
            }
            for (field, value) in &entry.extra {
                if MAX_OUTPUT_FIELDS.contains(&field.as_str()) {
                    prices.output_limit(field, value.as_u64());
                } else if field == REGIONAL_UPLIFT_FIELD {
                    prices.regional_uplift(UsdPerToken::from_json_value(value));
                } else if let Some(target) = price_field(field) {
                    prices.push(
                        field.clone(),
                        Target::Price(target),
                        UsdPerToken::from_json_value(value),
                    );
                }
            }
            if let Some(price) = prices.build()? {
                table.insert(model.clone(), price);
            }
        }
        Ok(table)
    }
}

/// A billing class; the index into a [`ClassPrices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Input,
    Output,
    CacheWrite5m,
    CacheWrite1h,
    CacheRead,
}

type ClassPrices = [Option<u64>; 5];

fn base_class(field: &str) -> Option<Class> {
    Some(match field {
        "input_cost_per_token" => Class::Input,
        "output_cost_per_token" => Class::Output,
        "cache_creation_input_token_cost" => Class::CacheWrite5m,
        "cache_creation_input_token_cost_above_1hr" => Class::CacheWrite1h,
        "cache_read_input_token_cost" => Class::CacheRead,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PriceField {
    Base(Class),
    Tier { class: Class, above_prompt_tokens: u64 },
}

/// The price fields we read: the five base fields and their
/// `<field>_above_<N>k_tokens` tiers. Other variants (`_priority`, `_batches`,
/// `_flex`, per-image, per-second...) are not token prices of a standard
/// request, and are ignored.
fn price_field(field: &str) -> Option<PriceField> {
    if let Some(class) = base_class(field) {
        return Some(PriceField::Base(class));
    }
    let (base, thousands) = field.strip_suffix("k_tokens")?.rsplit_once("_above_")?;
    if thousands.is_empty() || !thousands.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let above_prompt_tokens = thousands.parse::<u64>().ok()?.checked_mul(1000)?;
    Some(PriceField::Tier {
        class: base_class(base)?,
        above_prompt_tokens,
    })
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Price(PriceField),
    WebSearch,
}

/// One entry's price fields as read, validated only if the entry is kept.
struct EntryPrices<'m> {
    model: &'m str,
    fields: Vec<(String, Target, Result<UsdPerToken, PriceValueError>)>,
    /// `max_output_tokens` (preferred) or the legacy `max_tokens`.
    max_output: (Option<u64>, Option<u64>),
    /// `regional_endpoint_uplift_multiplier`, when present and not null.
    regional_uplift: Option<Result<UsdPerToken, PriceValueError>>,
}

impl<'m> EntryPrices<'m> {
    fn new(model: &'m str) -> Self {
        Self {
            model,
            fields: Vec::new(),
            max_output: (None, None),
            regional_uplift: None,
        }
    }

    /// Records the regional endpoint uplift; a null is the same as an absent field.
    fn regional_uplift(&mut self, value: Result<Option<UsdPerToken>, PriceValueError>) {
        self.regional_uplift = value.transpose();
    }

    /// Records an output limit field; anything but a positive integer reads as absent.
    fn output_limit(&mut self, field: &str, value: Option<u64>) {
        let value = value.filter(|v| *v > 0);
        if field == MAX_OUTPUT_FIELDS[0] {
            self.max_output.0 = value;
        } else {
            self.max_output.1 = value;
        }
    }

    /// Records a field; a null (`Ok(None)`) is the same as an absent field.
    fn push(&mut self, field: String, target: Target, value: Result<Option<UsdPerToken>, PriceValueError>) {
        match value {
            Ok(None) => {}
            Ok(Some(value)) => self.fields.push((field, target, Ok(value))),
            Err(reason) => self.fields.push((field, target, Err(reason))),
        }
    }

    fn has(&self, class: Class) -> bool {
        self.fields
            .iter()
            .any(|(_, target, _)| matches!(target, Target::Price(PriceField::Base(c)) if *c == class))
    }

    /// The model's price, or `None` when the entry has no input or no output
    /// price per token (it prices something else).
    fn build(self) -> Result<Option<ModelPrice>, PriceError> {
        if !self.has(Class::Input) || !self.has(Class::Output) {
            return Ok(None);
        }
        let mut base: ClassPrices = [None; 5];
        let mut tiers: BTreeMap<u64, ClassPrices> = BTreeMap::new();
        let mut web_search: Option<u64> = None;
        for (field, target, value) in self.fields {
            let pico = value
                .and_then(|v| v.to_pico_usd())
                .map_err(|reason| PriceError::InvalidPrice {
                    model: self.model.to_owned(),
                    field,
                    reason,
                })?;
            match target {
                Target::Price(PriceField::Base(class)) => base[class as usize] = Some(pico),
                Target::Price(PriceField::Tier {
                    class,
                    above_prompt_tokens,
                }) => {
                    tiers.entry(above_prompt_tokens).or_default()[class as usize] = Some(pico);
                }
                Target::WebSearch => web_search = web_search.max(Some(pico)),
            }
        }

        let regional_uplift = self
            .regional_uplift
            .map(|value| {
                value
                    .and_then(|factor| match factor.is_negative() {
                        true => Err(PriceValueError::Negative(factor)),
                        false => Ok(factor),
                    })
                    .map_err(|reason| PriceError::InvalidPrice {
                        model: self.model.to_owned(),
                        field: REGIONAL_UPLIFT_FIELD.to_owned(),
                        reason,
                    })
            })
            .transpose()?;

        let input = base[Class::Input as usize].unwrap_or(0);
        let base = Rates {
            input,
            output: base[Class::Output as usize].unwrap_or(0),
            cache_write_5m: base[Class::CacheWrite5m as usize]
                .unwrap_or_else(|| derived_cache_write_5m(input)),
            cache_write_1h: base[Class::CacheWrite1h as usize]
                .unwrap_or_else(|| derived_cache_write_1h(input)),
            cache_read: base[Class::CacheRead as usize].unwrap_or_else(|| derived_cache_read(input)),
        };
        let mut price = ModelPrice::new(base)
            .with_web_search_request(web_search.unwrap_or(0))
            .with_max_output_tokens(self.max_output.0.or(self.max_output.1));
        for (above_prompt_tokens, tier) in tiers {
            // A class the tier does not price keeps its base price.
            let rates = Rates {
                input: tier[Class::Input as usize].unwrap_or(base.input),
                output: tier[Class::Output as usize].unwrap_or(base.output),
                cache_write_5m: tier[Class::CacheWrite5m as usize].unwrap_or(base.cache_write_5m),
                cache_write_1h: tier[Class::CacheWrite1h as usize].unwrap_or(base.cache_write_1h),
                cache_read: tier[Class::CacheRead as usize].unwrap_or(base.cache_read),
            };
            price = price.with_tier(above_prompt_tokens, rates);
        }
        if let Some(factor) = regional_uplift {
            price = price.with_regional_uplift(&factor);
        }
        Ok(Some(price))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Tier;

    /// Shaped like the real file: the sample_spec entry, image models, an
    /// embedding model, non-Anthropic chat models and fields we ignore.
    const LITELLM_SNIPPET: &str = r#"{
        "sample_spec": {
            "code_interpreter_cost_per_session": 0.0,
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
            "max_input_tokens": "max input tokens, if the provider specifies it. if not default to max_tokens",
            "max_tokens": "LEGACY parameter.",
            "mode": "one of: chat, embedding, completion, image_generation",
            "search_context_cost_per_query": {
                "search_context_size_high": 0.0,
                "search_context_size_low": 0.0,
                "search_context_size_medium": 0.0
            },
            "supported_regions": ["global", "us-west-2"],
            "supports_vision": true
        },
        "1024-x-1024/dall-e-2": {
            "input_cost_per_pixel": 1.9e-08,
            "litellm_provider": "openai",
            "mode": "image_generation",
            "output_cost_per_pixel": 0.0
        },
        "amazon.nova-canvas-v1:0": {
            "litellm_provider": "bedrock",
            "max_input_tokens": 2600,
            "mode": "image_generation",
            "output_cost_per_image": 0.06
        },
        "text-embedding-3-small": {
            "input_cost_per_token": 2e-08,
            "input_cost_per_token_batches": 1e-08,
            "litellm_provider": "openai",
            "max_input_tokens": 8191,
            "mode": "embedding",
            "output_vector_size": 1536
        },
        "amazon.nova-2-pro-preview-20251202-v1:0": {
            "cache_read_input_token_cost": 5.46875e-07,
            "input_cost_per_token": 2.1875e-06,
            "input_cost_per_image_token": 2.1875e-06,
            "litellm_provider": "bedrock_converse",
            "max_input_tokens": 1000000,
            "mode": "chat",
            "output_cost_per_token": 1.75e-05,
            "supports_reasoning": true
        },
        "claude-sonnet-4-5-20250929": {
            "cache_creation_input_token_cost": 3.75e-06,
            "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06,
            "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_read_input_token_cost_above_200k_tokens": 6e-07,
            "input_cost_per_token": 3e-06,
            "input_cost_per_token_above_200k_tokens": 6e-06,
            "input_cost_per_token_above_200k_tokens_priority": 1.2e-05,
            "input_cost_per_token_batches": 1.5e-06,
            "litellm_provider": "anthropic",
            "max_input_tokens": 200000,
            "max_output_tokens": 64000,
            "max_tokens": 64000,
            "metadata": {"notes": "anything"},
            "mode": "chat",
            "output_cost_per_token": 1.5e-05,
            "output_cost_per_token_above_200k_tokens": 2.25e-05,
            "search_context_cost_per_query": {
                "search_context_size_high": 0.01,
                "search_context_size_low": 0.01,
                "search_context_size_medium": 0.01
            },
            "supports_computer_use": true,
            "tool_use_system_prompt_tokens": 346
        },
        "gpt-4o": {
            "cache_read_input_token_cost": 1.25e-06,
            "input_cost_per_token": 2.5e-06,
            "input_cost_per_token_priority": 4.25e-06,
            "output_cost_per_token": 1e-05,
            "litellm_provider": "openai",
            "mode": "chat"
        },
        "string-prices": {
            "input_cost_per_token": "0.000001",
            "output_cost_per_token": "5e-06",
            "cache_read_input_token_cost": null
        },
        "not-an-object": 42
    }"#;

    #[test]
    fn litellm_snippet_parses_and_skips_what_is_not_a_model_price() {
        let table = PriceTable::from_litellm_json(LITELLM_SNIPPET.as_bytes()).unwrap();
        assert_eq!(
            table.model_names().collect::<Vec<_>>(),
            [
                "amazon.nova-2-pro-preview-20251202-v1:0",
                "claude-sonnet-4-5-20250929",
                "gpt-4o",
                "string-prices"
            ]
        );

        let sonnet = table.get("claude-sonnet-4-5-20250929").unwrap();
        assert_eq!(
            *sonnet.base(),
            Rates {
                input: 3_000_000,
                output: 15_000_000,
                cache_write_5m: 3_750_000,
                cache_write_1h: 6_000_000,
                cache_read: 300_000
            }
        );
        assert_eq!(
            sonnet.tiers(),
            [Tier {
                above_prompt_tokens: 200_000,
                rates: Rates {
                    input: 6_000_000,
                    output: 22_500_000,
                    cache_write_5m: 7_500_000,
                    cache_write_1h: 12_000_000,
                    cache_read: 600_000
                },
            }]
        );
        assert_eq!(sonnet.web_search_request(), 10_000_000_000);

        // Cache writes derived from input: 2.1875e-06 × 1.25 = 2.734375e-06, × 2.
        let nova = table.get("amazon.nova-2-pro-preview-20251202-v1:0").unwrap();
        assert_eq!(
            *nova.base(),
            Rates {
                input: 2_187_500,
                output: 17_500_000,
                cache_write_5m: 2_734_375,
                cache_write_1h: 4_375_000,
                cache_read: 546_875
            }
        );
        assert!(nova.tiers().is_empty());

        // Strings are decimals; null is absent (read derived: 0.1 × input).
        let strings = table.get("string-prices").unwrap();
        assert_eq!(*strings.base(), Rates::with_derived_cache(1_000_000, 5_000_000));
        assert_eq!(strings.base().cache_read, 100_000);
    }

    #[test]
    fn missing_cache_prices_are_derived() {
        let table = PriceTable::from_litellm_json(
            br#"{
                "only-io": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05},
                "only-5m": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                            "cache_creation_input_token_cost": 4e-06},
                "new-multipliers": {"input_cost_per_token": 2e-06, "output_cost_per_token": 1e-05,
                            "cache_creation_input_token_cost": 2e-06,
                            "cache_creation_input_token_cost_above_1hr": 3e-06,
                            "cache_read_input_token_cost": 1e-07}
            }"#,
        )
        .unwrap();
        let rates = |model: &str| *table.get(model).unwrap().base();
        assert_eq!(
            rates("only-io"),
            Rates {
                input: 3_000_000,
                output: 15_000_000,
                cache_write_5m: 3_750_000,
                cache_write_1h: 6_000_000,
                cache_read: 300_000
            }
        );
        assert_eq!(
            rates("only-5m"),
            Rates {
                input: 3_000_000,
                output: 15_000_000,
                cache_write_5m: 4_000_000,
                cache_write_1h: 6_000_000,
                cache_read: 300_000
            }
        );
        // Given prices win over the multipliers.
        assert_eq!(
            rates("new-multipliers"),
            Rates {
                input: 2_000_000,
                output: 10_000_000,
                cache_write_5m: 2_000_000,
                cache_write_1h: 3_000_000,
                cache_read: 100_000
            }
        );
    }

    #[test]
    fn invalid_prices_are_rejected_with_model_and_field() {
        let cases = [
            (
                r#"{"m": {"input_cost_per_token": -3e-06, "output_cost_per_token": 1e-06}}"#,
                "input_cost_per_token",
                "negative",
            ),
            (
                r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-13}}"#,
                "output_cost_per_token",
                "pico",
            ),
            (
                r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": true}}"#,
                "output_cost_per_token",
                "number",
            ),
            (
                r#"{"m": {"input_cost_per_token": "3 USD", "output_cost_per_token": 1e-06}}"#,
                "input_cost_per_token",
                "decimal",
            ),
            (
                r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "cache_read_input_token_cost": [1]}}"#,
                "cache_read_input_token_cost",
                "number",
            ),
            (
                r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "input_cost_per_token_above_200k_tokens": -1}}"#,
                "input_cost_per_token_above_200k_tokens",
                "negative",
            ),
            (
                r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "search_context_cost_per_query": {"search_context_size_low": "x"}}}"#,
                "search_context_cost_per_query.search_context_size_low",
                "decimal",
            ),
        ];
        for (json, field, words) in cases {
            let err = PriceTable::from_litellm_json(json.as_bytes()).unwrap_err();
            let PriceError::InvalidPrice {
                model,
                field: got_field,
                ..
            } = &err
            else {
                panic!("{json}: {err}");
            };
            assert_eq!((model.as_str(), got_field.as_str()), ("m", field), "{json}");
            assert!(err.to_string().contains(words), "{json}: {err}");
        }
    }

    #[test]
    fn invalid_prices_in_skipped_entries_do_not_matter() {
        // No output price per token: not a model price, so its odd input price
        // is never read.
        let table = PriceTable::from_litellm_json(
            br#"{"embedding": {"input_cost_per_token": 1e-15, "mode": "embedding"}}"#,
        )
        .unwrap();
        assert!(table.is_empty());
    }

    #[test]
    fn lenient_reading_keeps_the_valid_entries() {
        let json = br#"{
            "good": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
            "bad": {"input_cost_per_token": 1.4999999999999999e-07, "output_cost_per_token": 2e-06}
        }"#;
        assert!(PriceTable::from_litellm_json(json).is_err());
        let (table, errors) = PriceTable::from_litellm_json_lenient(json).unwrap();
        assert_eq!(table.model_names().collect::<Vec<_>>(), ["good"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("\"bad\""), "{}", errors[0]);
    }

    #[test]
    fn tier_field_names() {
        use Class::*;
        let tier = |class, above_prompt_tokens| {
            Some(PriceField::Tier {
                class,
                above_prompt_tokens,
            })
        };
        assert_eq!(price_field("input_cost_per_token"), Some(PriceField::Base(Input)));
        assert_eq!(
            price_field("cache_creation_input_token_cost_above_1hr"),
            Some(PriceField::Base(CacheWrite1h))
        );
        assert_eq!(
            price_field("input_cost_per_token_above_200k_tokens"),
            tier(Input, 200_000)
        );
        assert_eq!(
            price_field("output_cost_per_token_above_128k_tokens"),
            tier(Output, 128_000)
        );
        assert_eq!(
            price_field("cache_creation_input_token_cost_above_272k_tokens"),
            tier(CacheWrite5m, 272_000)
        );
        assert_eq!(
            price_field("cache_read_input_token_cost_above_200k_tokens"),
            tier(CacheRead, 200_000)
        );
        assert_eq!(
            price_field("cache_creation_input_token_cost_above_1hr_above_200k_tokens"),
            tier(CacheWrite1h, 200_000)
        );
        for ignored in [
            "input_cost_per_token_above_200k_tokens_priority",
            "input_cost_per_token_batches",
            "input_cost_per_token_priority",
            "input_cost_per_token_above_k_tokens",
            "input_cost_per_token_above_1.5k_tokens",
            "input_cost_per_token_above_+2k_tokens",
            "input_cost_per_token_above_99999999999999999999k_tokens",
            "input_cost_per_character_above_128k_tokens",
            "output_cost_per_image",
            "max_input_tokens",
            "mode",
        ] {
            assert_eq!(price_field(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn from_entries_matches_from_litellm_json() {
        // The same snippet through serde (as the policy document would read it)
        // gives the same table: every price in it has at most 15 digits.
        let entries: BTreeMap<String, serde_json::Value> = serde_json::from_str(LITELLM_SNIPPET).unwrap();
        let entries: BTreeMap<String, PriceEntry> = entries
            .into_iter()
            .filter(|(name, value)| name != SAMPLE_SPEC && value.is_object())
            .map(|(name, value)| (name, serde_json::from_value(value).unwrap()))
            .collect();
        let typed = PriceTable::from_entries(&entries).unwrap();
        let raw = PriceTable::from_litellm_json(LITELLM_SNIPPET.as_bytes()).unwrap();
        assert_eq!(typed, raw);
    }

    #[test]
    fn price_entry_from_yaml_with_tiers_and_strings() {
        let yaml = r#"
claude-sonnet-4-5:
  input_cost_per_token: 3e-06
  output_cost_per_token: "0.000015"
  cache_read_input_token_cost: 3.0e-7
  input_cost_per_token_above_200k_tokens: "6e-06"
  output_cost_per_token_above_200k_tokens: 2.25e-05
  search_context_cost_per_query:
    search_context_size_medium: 0.01
  litellm_provider: anthropic
  max_input_tokens: 1000000
"#;
        let entries: BTreeMap<String, PriceEntry> = serde_yaml::from_str(yaml).unwrap();
        let entry = &entries["claude-sonnet-4-5"];
        assert_eq!(entry.output_cost_per_token, Some("1.5e-5".parse().unwrap()));
        assert!(entry.extra.contains_key("litellm_provider"));
        let table = PriceTable::from_entries(&entries).unwrap();
        let price = table.get("claude-sonnet-4-5").unwrap();
        assert_eq!(*price.base(), Rates::with_derived_cache(3_000_000, 15_000_000));
        assert_eq!(price.rates_for(200_001).input, 6_000_000);
        assert_eq!(price.rates_for(200_001).output, 22_500_000);
        assert_eq!(price.rates_for(200_001).cache_read, 300_000);
        assert_eq!(price.web_search_request(), 10_000_000_000);

        let bad: BTreeMap<String, PriceEntry> = serde_yaml::from_str(
            "m:\n  input_cost_per_token: 1e-06\n  output_cost_per_token: 1e-06\n  cache_read_input_token_cost_above_200k_tokens: 1e-13\n",
        )
        .unwrap();
        let err = PriceTable::from_entries(&bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("price of model \"m\", field cache_read_input_token_cost_above_200k_tokens:"),
            "{err}"
        );
        assert!(
            serde_yaml::from_str::<BTreeMap<String, PriceEntry>>("m:\n  input_cost_per_token: abc\n")
                .is_err()
        );
    }

    #[test]
    fn price_entry_round_trips_through_json() {
        let entry: PriceEntry = serde_json::from_str(
            r#"{"input_cost_per_token": 3e-06, "output_cost_per_token": "0.000015",
                "input_cost_per_token_above_200k_tokens": 6e-06, "mode": "chat"}"#,
        )
        .unwrap();
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                               "input_cost_per_token_above_200k_tokens": 6e-06, "mode": "chat"})
        );
        assert_eq!(serde_json::from_value::<PriceEntry>(json).unwrap(), entry);
    }

    #[test]
    fn price_entry_json_schema() {
        let schema = serde_json::to_value(schemars::schema_for!(PriceEntry)).unwrap();
        let usd = &schema["$defs"]["UsdPerToken"];
        let kinds: Vec<&str> = usd["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["number", "string"]);
        let properties = schema["properties"].as_object().unwrap();
        for field in [
            "input_cost_per_token",
            "output_cost_per_token",
            "cache_creation_input_token_cost",
            "cache_creation_input_token_cost_above_1hr",
            "cache_read_input_token_cost",
            "search_context_cost_per_query",
        ] {
            assert!(properties.contains_key(field), "{field}: {schema:#}");
        }
        assert!(schema.get("required").is_none(), "{schema:#}");
    }
}
