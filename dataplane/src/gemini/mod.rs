//! The Gemini API wire format (what Gemini CLI speaks): pure building blocks for the
//! request path, each tested without sockets.
//!
//! - [`request`]: which call a path names (`/gemini/v1beta/models/{model}:generateContent`,
//!   `:streamGenerateContent`, `:countTokens`), the virtual key the client presents
//!   (`x-goog-api-key` or `?key=`), and what a body says about its size
//!   (`generationConfig.maxOutputTokens`).
//! - [`usage`]: token usage of an answer ([`usage::GeminiTap`] for the SSE stream of
//!   `GenerateContentResponse` chunks, [`usage::usage_from_json`] for a whole body), mapped
//!   to the crate's [`crate::usage::Usage`] billing classes.
//! - [`error`]: Google's error shape, and the gateway's refusals in it, with statuses chosen
//!   for how Gemini CLI reacts (see that module for what Gemini CLI retries).
//! - [`tools`]: the built-in tool policy applied to `tools[]` (function declarations by
//!   name, Google's built-in tools by their key).
//! - [`upstream`]: the request to the Gemini API itself (`x-goog-api-key`); Gemini models on
//!   Vertex AI are built by [`crate::providers::vertex::Vertex::gemini_request`].
//!
//! Prices are `dataplane/prices/gemini.json` (LiteLLM's values), under `gemini/{model}` for
//! the Gemini API ([`api_price`]) and `vertex_ai/{model}` for Vertex AI (found by
//! [`crate::pricing::PriceTable::for_provider`] with the Vertex kind, regional uplift
//! included).
//!
//! References: <https://ai.google.dev/api/generate-content>,
//! <https://ai.google.dev/api/tokens>, <https://ai.google.dev/gemini-api/docs/troubleshooting>,
//! <https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference>.

pub mod error;
pub mod request;
pub mod tools;
pub mod upstream;
pub mod usage;

mod json;

pub use request::{Info, Method};

use crate::pricing::{ModelPrice, PriceTable};

/// The prefix of the Gemini API's entries in the price table (LiteLLM's provider name).
pub const API_PRICE_PREFIX: &str = "gemini/";

/// The model id without the API's optional `models/` resource prefix (`models/gemini-2.5-pro`
/// and `gemini-2.5-pro` name the same model).
pub fn bare_model(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

/// The Gemini API price of `model` (`gemini/{model}`), with the table's name for it.
pub fn api_price<'t>(table: &'t PriceTable, model: &str) -> Option<(&'t str, &'t ModelPrice)> {
    table.resolve(&format!("{API_PRICE_PREFIX}{}", bare_model(model)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemini::usage::{GeminiTap, usage_from_json};
    use crate::policy::document::ProviderKind;
    use crate::pricing::{PicoUsd, ProviderPricing};
    use crate::usage::{StreamTap, Usage};

    /// Every Gemini model Gemini CLI picks by default is priced, on both APIs.
    #[test]
    fn the_models_gemini_cli_uses_are_priced() {
        let table = PriceTable::builtin();
        for model in [
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-3-flash-preview",
            "gemini-3.1-pro-preview",
            "gemini-3.1-pro-preview-customtools",
            "gemini-3.1-flash-lite",
            "gemini-3.5-flash",
        ] {
            assert!(api_price(&table, model).is_some(), "gemini/{model}");
            assert!(
                api_price(&table, &format!("models/{model}")).is_some(),
                "models/{model}"
            );
        }
        // LiteLLM has no Gemini API entry for gemini-3-pro-preview; Vertex has one.
        let vertex = ProviderPricing::new(ProviderKind::Vertex, Some("global"));
        for model in [
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-3-pro-preview",
            "gemini-3.1-pro-preview",
            "gemini-3.5-flash",
        ] {
            let p = table.for_provider(vertex, model).unwrap();
            assert_eq!(p.entry, format!("vertex_ai/{model}"));
        }
    }

    fn usage(prompt: u64, cached: u64, candidates: u64, thoughts: u64) -> Usage {
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}]}},"finishReason":"STOP"}}],
                "usageMetadata":{{"promptTokenCount":{prompt},"cachedContentTokenCount":{cached},
                "candidatesTokenCount":{candidates},"thoughtsTokenCount":{thoughts}}}}}"#
        );
        usage_from_json(body.as_bytes()).unwrap()
    }

    /// gemini-2.5-pro on the Gemini API: $1.25 / $10 per MTok, cache reads $0.125; above 200k
    /// prompt tokens $2.50 / $15, cache reads $0.25. pico-USD per token = USD per MTok × 1e6.
    #[test]
    fn gemini_2_5_pro_costs_of_every_class_and_the_200k_tier() {
        let table = PriceTable::builtin();
        let (entry, pro) = api_price(&table, "gemini-2.5-pro").unwrap();
        assert_eq!(entry, "gemini/gemini-2.5-pro");
        // Input only.
        assert_eq!(pro.cost(&usage(1_000, 0, 0, 0)), PicoUsd(1_250_000_000));
        // Cached input: 400 of 1000 prompt tokens read from the cache.
        assert_eq!(
            pro.cost(&usage(1_000, 400, 0, 0)),
            PicoUsd(600 * 1_250_000 + 400 * 125_000)
        );
        // Output and thoughts are both output.
        assert_eq!(pro.cost(&usage(0, 0, 300, 700)), PicoUsd(1_000 * 10_000_000));
        // Exactly 200k prompt tokens: base price.
        assert_eq!(
            pro.cost(&usage(200_000, 0, 1_000, 0)),
            PicoUsd(200_000 * 1_250_000 + 1_000 * 10_000_000)
        );
        // One more (cached tokens count toward the prompt): the whole request at the tier.
        assert_eq!(
            pro.cost(&usage(200_001, 100_000, 500, 500)),
            PicoUsd(100_001 * 2_500_000 + 100_000 * 250_000 + 1_000 * 15_000_000)
        );
    }

    #[test]
    fn flash_costs_from_a_stream_equal_the_json_answer() {
        let table = PriceTable::builtin();
        let (_, flash) = api_price(&table, "gemini-2.5-flash").unwrap();
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":5000,\"cachedContentTokenCount\":4000,\"totalTokenCount\":5000}}\r\n\r\n\
            data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" there\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":5000,\"cachedContentTokenCount\":4000,\"candidatesTokenCount\":200,\"thoughtsTokenCount\":800,\"totalTokenCount\":6000}}\r\n\r\n";
        let mut tap = GeminiTap::new();
        tap.feed(stream.as_bytes());
        let streamed = tap.usage().unwrap();
        assert!(tap.completed() && tap.final_usage());
        assert_eq!(streamed, usage(5_000, 4_000, 200, 800));
        // $0.30 input, $0.03 cache read, $2.50 output per MTok.
        assert_eq!(
            flash.cost(&streamed),
            PicoUsd(1_000 * 300_000 + 4_000 * 30_000 + 1_000 * 2_500_000)
        );
    }

    #[test]
    fn vertex_regional_uplift_applies_to_gemini_entries_that_state_it() {
        let table = PriceTable::builtin();
        let regional = ProviderPricing::new(ProviderKind::Vertex, Some("us-central1"));
        let global = ProviderPricing::new(ProviderKind::Vertex, Some("global"));
        let u = usage(1_000, 0, 1_000, 0);
        // gemini-3.5-flash: $1.50 / $9 per MTok, 1.1x at a regional endpoint.
        let g = table.for_provider(global, "gemini-3.5-flash").unwrap();
        assert_eq!(g.price.cost(&u), PicoUsd(1_000 * 1_500_000 + 1_000 * 9_000_000));
        let r = table.for_provider(regional, "gemini-3.5-flash").unwrap();
        assert!(r.regional_uplift);
        assert_eq!(r.price.cost(&u), PicoUsd(1_000 * 1_650_000 + 1_000 * 9_900_000));
    }
}
