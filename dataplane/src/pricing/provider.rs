//! The price of a model on the provider that serves it.
//!
//! Claude costs different amounts on different providers: Bedrock's geographic
//! cross-region inference profiles (`us.`, `eu.`, `apac.`, `au.`, `jp.`, `us-gov.`)
//! cost more than its in-region and `global.` ones, GovCloud regions more again,
//! and Vertex AI's regional endpoints more than its global one. LiteLLM's table
//! prices each under the provider's own model id, and so does this lookup
//! ([`PriceTable::for_provider`]), most specific entry first:
//!
//! | provider | entries tried, in order |
//! | --- | --- |
//! | `bedrock` | `bedrock/{region}/{id}`, `{id}` (Bedrock ids have a `.`: `anthropic.claude-…-v1:0`, `us.anthropic.claude-…`), `bedrock/{id}` |
//! | `vertex` | `vertex_ai/{model}` (`claude-sonnet-4-5@20250929`), then `vertex_ai/{model before @}` |
//! | `foundry` | `azure_ai/{model}` |
//! | every kind, last | the Anthropic price of the normalized name ([`PriceTable::resolve`]) |
//!
//! `{id}` is the Bedrock model id, or the profile id an ARN names
//! (`arn:aws:bedrock:…:inference-profile/us.anthropic.…`). On a Vertex region other
//! than `global` (or an unknown one), a Vertex entry's regional endpoint uplift applies
//! ([`ModelPrice::at_regional_endpoint`]).
//!
//! Guarantees: the result names the entry that priced it and says whether that was the
//! provider's own price or the Anthropic fallback ([`PriceSource`]). An id whose
//! normalized name is not in the table is not priced (`None`): the caller charges the
//! dearest model rather than guess. Non-guarantee: the Anthropic fallback does not know
//! a provider's regional surcharge, so a geographic profile or regional endpoint the
//! table lacks is priced at Anthropic's list price; [`PriceSource::Anthropic`] says so.

use std::borrow::Cow;

use super::{ModelPrice, PriceTable};
use crate::policy::document::ProviderKind;

/// The provider serving a request, as far as its price depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderPricing<'a> {
    /// Which API the provider speaks.
    pub kind: ProviderKind,
    /// The provider's cloud region (`us-east-1`, `us-east5`, `global`), when it has one.
    pub region: Option<&'a str>,
}

impl ProviderPricing<'static> {
    /// The Anthropic Messages API (no region).
    pub const ANTHROPIC: Self = Self {
        kind: ProviderKind::Anthropic,
        region: None,
    };
}

impl<'a> ProviderPricing<'a> {
    /// A provider of `kind` in `region`.
    pub fn new(kind: ProviderKind, region: Option<&'a str>) -> Self {
        Self { kind, region }
    }

    /// Whether a Vertex regional endpoint serves the request: any region but `global`,
    /// an absent one included (never the cheaper guess).
    fn regional_endpoint(&self) -> bool {
        self.kind == ProviderKind::Vertex && !self.region.is_some_and(|r| r.eq_ignore_ascii_case("global"))
    }
}

/// Which kind of entry priced a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// An entry under the provider's own id for the model (`us.anthropic.…`,
    /// `vertex_ai/…`, `azure_ai/…`).
    Provider,
    /// The Anthropic API price of the normalized model name: the table has no entry for
    /// the model under the provider's own id (or the provider is Anthropic's API).
    Anthropic,
}

/// The price of a model on a provider, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderPrice<'a> {
    /// The table entry that priced the model, e.g. `us.anthropic.claude-sonnet-4-6`.
    pub entry: &'a str,
    /// The price to charge (with the regional endpoint uplift when `regional_uplift`).
    pub price: &'a ModelPrice,
    /// Whether `entry` is the provider's own price or the Anthropic fallback.
    pub source: PriceSource,
    /// Whether the entry's Vertex regional endpoint uplift was applied.
    pub regional_uplift: bool,
}

impl PriceTable {
    /// The price of `model` (the upstream model id sent to the provider) on `provider`:
    /// the provider's own entry, most specific first, else the Anthropic price of the
    /// normalized name; `None` when neither is in the table. See the module doc for the
    /// order.
    pub fn for_provider(&self, provider: ProviderPricing<'_>, model: &str) -> Option<ProviderPrice<'_>> {
        let own = provider_entry_names(provider, model)
            .into_iter()
            .find_map(|name| self.models.get_key_value(name.as_ref()));
        if let Some((entry, price)) = own {
            let regional = provider.regional_endpoint() && price.has_regional_uplift();
            return Some(ProviderPrice {
                entry,
                price: if regional {
                    price.at_regional_endpoint()
                } else {
                    price
                },
                source: PriceSource::Provider,
                regional_uplift: regional,
            });
        }
        self.resolve(model).map(|(entry, price)| ProviderPrice {
            entry,
            price,
            source: PriceSource::Anthropic,
            regional_uplift: false,
        })
    }
}

/// The provider's own names for `model` in LiteLLM's table, most specific first.
fn provider_entry_names<'m>(provider: ProviderPricing<'_>, model: &'m str) -> Vec<Cow<'m, str>> {
    match provider.kind {
        ProviderKind::Bedrock => {
            let id = bedrock_model_id(model);
            let mut names = Vec::with_capacity(3);
            if let Some(region) = provider.region.filter(|r| !r.is_empty()) {
                names.push(Cow::Owned(format!("bedrock/{region}/{id}")));
            }
            // Bedrock ids are `vendor.model`; a bare `claude-…` is an Anthropic name, priced
            // by the fallback (and labelled so).
            if id.contains('.') {
                names.push(Cow::Borrowed(id));
            }
            names.push(Cow::Owned(format!("bedrock/{id}")));
            names
        }
        ProviderKind::Vertex => {
            let mut names = vec![Cow::Owned(format!("vertex_ai/{model}"))];
            if let Some((name, _version)) = model.split_once('@') {
                names.push(Cow::Owned(format!("vertex_ai/{name}")));
            }
            names
        }
        ProviderKind::Foundry => vec![Cow::Owned(format!("azure_ai/{model}"))],
        // The Gemini API: LiteLLM's `gemini/…`, then the plain id.
        ProviderKind::Gemini => vec![Cow::Owned(format!("gemini/{model}")), Cow::Borrowed(model)],
        ProviderKind::Anthropic | ProviderKind::Openai | ProviderKind::Tollgate => Vec::new(),
    }
}

/// The model or inference profile id of a Bedrock model id or ARN
/// (`arn:aws:bedrock:us-east-1:…:inference-profile/us.anthropic.claude-…` ->
/// `us.anthropic.claude-…`). An application inference profile's ARN names an opaque id,
/// which no table prices.
fn bedrock_model_id(model: &str) -> &str {
    if model.starts_with("arn:") {
        if let Some((_, id)) = model.rsplit_once('/') {
            return id;
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{PicoUsd, UsdPerToken};
    use crate::usage::Usage;

    fn bedrock(region: &str) -> ProviderPricing<'_> {
        ProviderPricing::new(ProviderKind::Bedrock, Some(region))
    }

    fn vertex(region: &str) -> ProviderPricing<'_> {
        ProviderPricing::new(ProviderKind::Vertex, Some(region))
    }

    const FOUNDRY: ProviderPricing<'static> = ProviderPricing {
        kind: ProviderKind::Foundry,
        region: None,
    };

    /// One usage line: `tokens` of one class (index 0..5: input, output, 5m write, 1h
    /// write, read), plus `input` uncached input tokens.
    fn line(class: usize, tokens: u64, input: u64) -> Usage {
        let mut usage = Usage {
            input_tokens: input,
            ..Usage::default()
        };
        match class {
            0 => usage.input_tokens += tokens,
            1 => usage.output_tokens = tokens,
            2 => usage.cache_write_5m_tokens = tokens,
            3 => usage.cache_write_1h_tokens = tokens,
            _ => usage.cache_read_tokens = tokens,
        }
        usage
    }

    /// A provider, a model id, and the prices its entry states, in pico-USD per token
    /// (USD per token × 1e12), written from the decimals in `prices/default.json`.
    struct Case {
        provider: ProviderPricing<'static>,
        model: &'static str,
        entry: &'static str,
        source: PriceSource,
        regional_uplift: bool,
        /// Input, output, 5m cache write, 1h cache write, cache read.
        base: [u128; 5],
        /// The same above 200k prompt tokens, where the entry has that tier.
        above_200k: Option<[u128; 5]>,
        /// pico-USD per web search request.
        web_search: u128,
    }

    fn cases() -> Vec<Case> {
        vec![
            // claude-sonnet-4-5-20250929: 3e-06, 1.5e-05, 3.75e-06, 6e-06, 3e-07; above 200k:
            // 6e-06, 2.25e-05, 7.5e-06, 1.2e-05, 6e-07; search 0.01.
            Case {
                provider: ProviderPricing::ANTHROPIC,
                model: "claude-sonnet-4-5-20250929",
                entry: "claude-sonnet-4-5-20250929",
                source: PriceSource::Anthropic,
                regional_uplift: false,
                base: [3_000_000, 15_000_000, 3_750_000, 6_000_000, 300_000],
                above_200k: Some([6_000_000, 22_500_000, 7_500_000, 12_000_000, 600_000]),
                web_search: 10_000_000_000,
            },
            // A geographic profile, 10% over the in-region price: 3.3e-06, 1.65e-05,
            // 4.125e-06, 6.6e-06, 3.3e-07; above 200k: 6.6e-06, 2.475e-05, 8.25e-06,
            // 1.32e-05, 6.6e-07; search 0.01.
            Case {
                provider: bedrock("us-east-1"),
                model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                entry: "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                source: PriceSource::Provider,
                regional_uplift: false,
                base: [3_300_000, 16_500_000, 4_125_000, 6_600_000, 330_000],
                above_200k: Some([6_600_000, 24_750_000, 8_250_000, 13_200_000, 660_000]),
                web_search: 10_000_000_000,
            },
            // The in-region base id: 5e-06, 2.5e-05, 6.25e-06, 1e-05, 5e-07; search 0.01.
            Case {
                provider: bedrock("us-west-2"),
                model: "anthropic.claude-opus-4-6-v1",
                entry: "anthropic.claude-opus-4-6-v1",
                source: PriceSource::Provider,
                regional_uplift: false,
                base: [5_000_000, 25_000_000, 6_250_000, 10_000_000, 500_000],
                above_200k: None,
                web_search: 10_000_000_000,
            },
            // The global profile: 1e-06, 5e-06, 1.25e-06, 2e-06, 1e-07; no search price.
            Case {
                provider: bedrock("eu-west-1"),
                model: "global.anthropic.claude-haiku-4-5-20251001-v1:0",
                entry: "global.anthropic.claude-haiku-4-5-20251001-v1:0",
                source: PriceSource::Provider,
                regional_uplift: false,
                base: [1_000_000, 5_000_000, 1_250_000, 2_000_000, 100_000],
                above_200k: None,
                web_search: 0,
            },
            // GovCloud's regional entry wins over the plain id: 3.6e-06, 1.8e-05, 4.5e-06,
            // 7.2e-06, 3.6e-07; LiteLLM states no tier and no search price for it.
            Case {
                provider: bedrock("us-gov-west-1"),
                model: "anthropic.claude-sonnet-4-5-20250929-v1:0",
                entry: "bedrock/us-gov-west-1/anthropic.claude-sonnet-4-5-20250929-v1:0",
                source: PriceSource::Provider,
                regional_uplift: false,
                base: [3_600_000, 18_000_000, 4_500_000, 7_200_000, 360_000],
                above_200k: None,
                web_search: 0,
            },
            // Vertex global: the entry as written (5e-06, 2.5e-05, 6.25e-06, 1e-05, 5e-07).
            Case {
                provider: vertex("global"),
                model: "claude-opus-4-6",
                entry: "vertex_ai/claude-opus-4-6",
                source: PriceSource::Provider,
                regional_uplift: false,
                base: [5_000_000, 25_000_000, 6_250_000, 10_000_000, 500_000],
                above_200k: None,
                web_search: 10_000_000_000,
            },
            // Vertex regional: every token price × 1.1 (regional_endpoint_uplift_multiplier):
            // 3e-06 -> 3.3e-06, 1.5e-05 -> 1.65e-05, 3.75e-06 -> 4.125e-06, 6e-06 -> 6.6e-06,
            // 3e-07 -> 3.3e-07; above 200k 6e-06 -> 6.6e-06, 2.25e-05 -> 2.475e-05,
            // 7.5e-06 -> 8.25e-06, 1.2e-05 -> 1.32e-05, 6e-07 -> 6.6e-07. Search stays 0.01.
            Case {
                provider: vertex("us-east5"),
                model: "claude-sonnet-4-5@20250929",
                entry: "vertex_ai/claude-sonnet-4-5@20250929",
                source: PriceSource::Provider,
                regional_uplift: true,
                base: [3_300_000, 16_500_000, 4_125_000, 6_600_000, 330_000],
                above_200k: Some([6_600_000, 24_750_000, 8_250_000, 13_200_000, 660_000]),
                web_search: 10_000_000_000,
            },
            // The same entry on the global endpoint: as written.
            Case {
                provider: vertex("global"),
                model: "claude-sonnet-4-5@20250929",
                entry: "vertex_ai/claude-sonnet-4-5@20250929",
                source: PriceSource::Provider,
                regional_uplift: false,
                base: [3_000_000, 15_000_000, 3_750_000, 6_000_000, 300_000],
                above_200k: Some([6_000_000, 22_500_000, 7_500_000, 12_000_000, 600_000]),
                web_search: 10_000_000_000,
            },
            // Foundry: 5e-06, 2.5e-05, 6.25e-06, 1e-05, 5e-07; search 0.01.
            Case {
                provider: FOUNDRY,
                model: "claude-opus-4-6",
                entry: "azure_ai/claude-opus-4-6",
                source: PriceSource::Provider,
                regional_uplift: false,
                base: [5_000_000, 25_000_000, 6_250_000, 10_000_000, 500_000],
                above_200k: None,
                web_search: 10_000_000_000,
            },
        ]
    }

    #[test]
    fn every_provider_prices_every_token_class_exactly() {
        let table = PriceTable::builtin();
        for case in cases() {
            let what = format!("{:?} {}", case.provider, case.model);
            let found = table.for_provider(case.provider, case.model).expect(&what);
            assert_eq!(
                (found.entry, found.source, found.regional_uplift),
                (case.entry, case.source, case.regional_uplift),
                "{what}"
            );
            let cost = |usage: &Usage| found.price.cost(usage);

            // 1,000 tokens of each class alone, then all at once.
            for (class, price) in case.base.iter().enumerate() {
                assert_eq!(
                    cost(&line(class, 1_000, 0)),
                    PicoUsd(1_000 * price),
                    "{what} class {class}"
                );
            }
            let all = Usage {
                input_tokens: 1_000,
                output_tokens: 2_000,
                cache_write_5m_tokens: 3_000,
                cache_write_1h_tokens: 4_000,
                cache_read_tokens: 5_000,
                web_search_requests: 0,
            };
            let [input, output, write_5m, write_1h, read] = case.base;
            assert_eq!(
                cost(&all),
                PicoUsd(1_000 * input + 2_000 * output + 3_000 * write_5m + 4_000 * write_1h + 5_000 * read),
                "{what}"
            );

            // Web search: per request, 0.01 USD = 10,000,000,000 pico-USD where stated.
            let searches = Usage {
                web_search_requests: 3,
                ..Usage::default()
            };
            assert_eq!(cost(&searches), PicoUsd(3 * case.web_search), "{what}");

            // A 200,000-token prompt is not above the tier; 200,001 is, and then the whole
            // request is priced at the tier, each class at its tier price.
            assert_eq!(cost(&line(0, 200_000, 0)), PicoUsd(200_000 * input), "{what}");
            let tier = case.above_200k.unwrap_or(case.base);
            for class in 0..5 {
                // 200,000 input tokens plus 1,000 of the class: a prompt above 200k
                // (output does not count toward it, so add one more input token there).
                let extra_input = u64::from(class == 1);
                let usage = line(class, 1_000, 200_000 + extra_input);
                let expected = (200_000 + u128::from(extra_input)) * tier[0] + 1_000 * tier[class];
                assert_eq!(cost(&usage), PicoUsd(expected), "{what} tier class {class}");
            }
        }
    }

    #[test]
    fn bedrock_region_entry_wins_over_the_plain_id() {
        let table = PriceTable::builtin();
        let model = "anthropic.claude-opus-4-8";
        let gov = table.for_provider(bedrock("us-gov-east-1"), model).unwrap();
        assert_eq!(gov.entry, "bedrock/us-gov-east-1/anthropic.claude-opus-4-8");
        // 6e-06 and 3e-05 in GovCloud against 5e-06 and 2.5e-05 in the commercial regions.
        assert_eq!(
            (gov.price.base().input, gov.price.base().output),
            (6_000_000, 30_000_000)
        );
        let commercial = table.for_provider(bedrock("us-east-1"), model).unwrap();
        assert_eq!(commercial.entry, model);
        assert_eq!(commercial.price.base().input, 5_000_000);
        // Without a region, the plain id.
        let no_region = ProviderPricing::new(ProviderKind::Bedrock, None);
        assert_eq!(table.for_provider(no_region, model).unwrap().entry, model);

        // An entry named bedrock/{id} is found too, after the plain id.
        let mut custom = PriceTable::builtin();
        custom.overlay(
            PriceTable::from_litellm_json(
                br#"{"bedrock/anthropic.claude-x-v1:0": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
            )
            .unwrap(),
        );
        let found = custom
            .for_provider(bedrock("us-east-1"), "anthropic.claude-x-v1:0")
            .unwrap();
        assert_eq!(
            (found.entry, found.source),
            ("bedrock/anthropic.claude-x-v1:0", PriceSource::Provider)
        );
    }

    #[test]
    fn geographic_profiles_cost_more_than_global_ones() {
        let table = PriceTable::builtin();
        let model = "claude-sonnet-4-6";
        let price = |profile: &str| {
            let id = format!("{profile}anthropic.{model}");
            let found = table.for_provider(bedrock("us-east-1"), &id).unwrap();
            assert_eq!(found.source, PriceSource::Provider, "{id}");
            found.price.base().input
        };
        // 3.3e-06 in a geography, 3e-06 in-region and global.
        for geo in ["us.", "eu.", "apac.", "au.", "jp."] {
            assert_eq!(price(geo), 3_300_000, "{geo}");
        }
        assert_eq!(price("global."), 3_000_000);
        assert_eq!(price(""), 3_000_000);
    }

    #[test]
    fn no_geographic_profile_is_cheaper_than_its_global_or_in_region_price() {
        let table = PriceTable::builtin();
        let mut checked = 0;
        for name in table.model_names() {
            let Some((geo, id)) = name.split_once(".anthropic.") else {
                continue;
            };
            if geo == "global" {
                continue;
            }
            let price = table.get(name).unwrap().base();
            for cheaper in [format!("global.anthropic.{id}"), format!("anthropic.{id}")] {
                if let Some(other) = table.get(&cheaper) {
                    let other = other.base();
                    assert!(
                        price.input >= other.input
                            && price.output >= other.output
                            && price.cache_write_5m >= other.cache_write_5m
                            && price.cache_write_1h >= other.cache_write_1h
                            && price.cache_read >= other.cache_read,
                        "{name} is cheaper than {cheaper}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "{checked}");
    }

    #[test]
    fn unknown_ids_stay_unknown() {
        let table = PriceTable::builtin();
        for provider in [
            bedrock("us-east-1"),
            vertex("us-east5"),
            FOUNDRY,
            ProviderPricing::ANTHROPIC,
        ] {
            for unknown in [
                "anthropic.claude-opus-9-9-v1:0",
                "us.anthropic.claude-opus-9-9-v1:0",
                "amazon.nova-pro-v1:0",
                "claude-opus-9-9@20990101",
                "gpt-4o",
                "",
                "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
            ] {
                assert_eq!(
                    table.for_provider(provider, unknown),
                    None,
                    "{provider:?} {unknown}"
                );
            }
        }
    }

    #[test]
    fn vertex_ids_with_at_are_found() {
        let table = PriceTable::builtin();
        let found = table
            .for_provider(vertex("europe-west1"), "claude-haiku-4-5@20251001")
            .unwrap();
        assert_eq!(found.entry, "vertex_ai/claude-haiku-4-5@20251001");
        assert!(found.regional_uplift);
        // 1e-06 × 1.1.
        assert_eq!(found.price.base().input, 1_100_000);
        // A version LiteLLM does not list: the entry without it.
        let found = table
            .for_provider(vertex("global"), "claude-opus-4-6@20990101")
            .unwrap();
        assert_eq!(
            (found.entry, found.regional_uplift),
            ("vertex_ai/claude-opus-4-6", false)
        );
        // `@default` as LiteLLM lists it.
        let found = table
            .for_provider(vertex("global"), "claude-opus-4-7@default")
            .unwrap();
        assert_eq!(found.entry, "vertex_ai/claude-opus-4-7@default");
        // Region names are case-insensitive; an absent region is a regional endpoint.
        assert!(
            !table
                .for_provider(vertex("GLOBAL"), "claude-opus-4-6")
                .unwrap()
                .regional_uplift
        );
        let no_region = ProviderPricing::new(ProviderKind::Vertex, None);
        assert!(
            table
                .for_provider(no_region, "claude-opus-4-6")
                .unwrap()
                .regional_uplift
        );
    }

    #[test]
    fn a_model_the_provider_has_no_entry_for_falls_back_to_the_anthropic_price() {
        let table = PriceTable::builtin();
        // LiteLLM lists claude-sonnet-4-20250514 on Bedrock but not on Foundry or Vertex.
        for provider in [FOUNDRY, vertex("us-east5")] {
            let found = table.for_provider(provider, "claude-sonnet-4-20250514").unwrap();
            assert_eq!(
                (found.entry, found.source, found.regional_uplift),
                ("claude-sonnet-4-20250514", PriceSource::Anthropic, false),
                "{provider:?}"
            );
        }
        // An Anthropic-style name sent to Bedrock is labelled as the Anthropic price.
        let found = table
            .for_provider(bedrock("us-east-1"), "claude-opus-4-6")
            .unwrap();
        assert_eq!(
            (found.entry, found.source),
            ("claude-opus-4-6", PriceSource::Anthropic)
        );
        // A Bedrock date-suffixed id of a model only its undated entry names.
        let found = table
            .for_provider(bedrock("us-east-1"), "anthropic.claude-sonnet-4-0-v1:0")
            .unwrap();
        assert_eq!(
            (found.entry, found.source),
            ("claude-sonnet-4-0", PriceSource::Anthropic)
        );
        // Other kinds price by the model name.
        let openai = ProviderPricing::new(ProviderKind::Openai, None);
        assert_eq!(
            table.for_provider(openai, "claude-haiku-4-5").unwrap().entry,
            "claude-haiku-4-5"
        );
    }

    #[test]
    fn bedrock_arns_are_priced_by_the_profile_they_name() {
        let table = PriceTable::builtin();
        let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6";
        let found = table.for_provider(bedrock("us-east-1"), arn).unwrap();
        assert_eq!(
            (found.entry, found.source),
            ("us.anthropic.claude-sonnet-4-6", PriceSource::Provider)
        );
        let arn = "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-opus-4-6-v1";
        let found = table.for_provider(bedrock("us-west-2"), arn).unwrap();
        assert_eq!(found.entry, "anthropic.claude-opus-4-6-v1");
    }

    #[test]
    fn policy_overrides_win_and_state_their_own_uplift() {
        let mut table = PriceTable::builtin();
        table.overlay(
            PriceTable::from_litellm_json(
                br#"{
                    "bedrock/us-east-1/anthropic.claude-opus-4-6-v1": {"input_cost_per_token": 4e-06, "output_cost_per_token": 2e-05},
                    "vertex_ai/claude-opus-4-6": {"input_cost_per_token": 5e-06, "output_cost_per_token": 2.5e-05}
                }"#,
            )
            .unwrap(),
        );
        let found = table
            .for_provider(bedrock("us-east-1"), "anthropic.claude-opus-4-6-v1")
            .unwrap();
        assert_eq!(found.entry, "bedrock/us-east-1/anthropic.claude-opus-4-6-v1");
        assert_eq!(found.price.base().input, 4_000_000);
        // The override replaced the whole Vertex entry, uplift included.
        let found = table.for_provider(vertex("us-east5"), "claude-opus-4-6").unwrap();
        assert!(!found.regional_uplift);
        assert_eq!(found.price.base().input, 5_000_000);
    }

    #[test]
    fn regional_uplift_is_read_exactly_and_rejected_when_invalid() {
        let table = PriceTable::from_litellm_json(
            br#"{
                "vertex_ai/m": {"input_cost_per_token": 7e-12, "output_cost_per_token": 1e-06,
                                "regional_endpoint_uplift_multiplier": 1.1,
                                "input_cost_per_token_above_200k_tokens": 2e-06,
                                "search_context_cost_per_query": {"search_context_size_low": 0.01}},
                "vertex_ai/same": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                                   "regional_endpoint_uplift_multiplier": "1"},
                "vertex_ai/null": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                                   "regional_endpoint_uplift_multiplier": null}
            }"#,
        )
        .unwrap();
        let price = table.get("vertex_ai/m").unwrap();
        let regional = price.at_regional_endpoint();
        // 7 pico × 1.1 = 7.7, rounded up.
        assert_eq!(regional.base().input, 8);
        assert_eq!(regional.base().output, 1_100_000);
        assert_eq!(regional.tiers()[0].rates.input, 2_200_000);
        assert_eq!(regional.web_search_request(), price.web_search_request());
        assert!(!regional.has_regional_uplift());
        for flat in ["vertex_ai/same", "vertex_ai/null"] {
            assert!(!table.get(flat).unwrap().has_regional_uplift(), "{flat}");
        }

        for bad in ["-1.1", "\"x\"", "true"] {
            let json = format!(
                r#"{{"m": {{"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "regional_endpoint_uplift_multiplier": {bad}}}}}"#
            );
            let err = PriceTable::from_litellm_json(json.as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains("regional_endpoint_uplift_multiplier"),
                "{bad}: {err}"
            );
        }

        // The same through the policy document's typed entries.
        let entries: std::collections::BTreeMap<String, crate::pricing::PriceEntry> = serde_json::from_str(
            r#"{"vertex_ai/m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                                "regional_endpoint_uplift_multiplier": 1.1}}"#,
        )
        .unwrap();
        let typed = PriceTable::from_entries(&entries).unwrap();
        let factor: UsdPerToken = "1.1".parse().unwrap();
        assert_eq!(
            typed
                .get("vertex_ai/m")
                .unwrap()
                .at_regional_endpoint()
                .base()
                .input,
            factor.scale_ceil(1_000_000)
        );
    }

    #[test]
    fn builtin_table_prices_every_current_model_on_every_provider() {
        let table = PriceTable::builtin();
        let models = [
            (
                "claude-opus-4-5",
                "anthropic.claude-opus-4-5-20251101-v1:0",
                "claude-opus-4-5@20251101",
            ),
            (
                "claude-opus-4-6",
                "anthropic.claude-opus-4-6-v1",
                "claude-opus-4-6",
            ),
            ("claude-opus-4-7", "anthropic.claude-opus-4-7", "claude-opus-4-7"),
            ("claude-opus-4-8", "anthropic.claude-opus-4-8", "claude-opus-4-8"),
            ("claude-opus-5", "anthropic.claude-opus-5", "claude-opus-5"),
            ("claude-opus-5-5", "anthropic.claude-opus-5-5", "claude-opus-5-5"),
            (
                "claude-sonnet-4-5",
                "anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5@20250929",
            ),
            (
                "claude-sonnet-4-6",
                "anthropic.claude-sonnet-4-6",
                "claude-sonnet-4-6",
            ),
            ("claude-sonnet-5", "anthropic.claude-sonnet-5", "claude-sonnet-5"),
            (
                "claude-sonnet-5-5",
                "anthropic.claude-sonnet-5-5",
                "claude-sonnet-5-5",
            ),
            (
                "claude-haiku-4-5",
                "anthropic.claude-haiku-4-5-20251001-v1:0",
                "claude-haiku-4-5@20251001",
            ),
        ];
        for (foundry, bedrock_id, vertex_id) in models {
            for (provider, model) in [
                (bedrock("us-east-1"), bedrock_id.to_owned()),
                (bedrock("us-east-1"), format!("us.{bedrock_id}")),
                (bedrock("us-east-1"), format!("global.{bedrock_id}")),
                (vertex("global"), vertex_id.to_owned()),
                (vertex("us-east5"), vertex_id.to_owned()),
                (FOUNDRY, foundry.to_owned()),
            ] {
                let found = table.for_provider(provider, &model);
                assert_eq!(
                    found.map(|f| f.source),
                    Some(PriceSource::Provider),
                    "{provider:?} {model}"
                );
            }
        }
    }
}
