//! The usage charged for a response that ended without its final usage: a stream cut
//! before `message_delta` (the client left, the upstream failed, the tool guard stopped
//! it, it went idle), a JSON body that was cut or too large to read whole.
//!
//! # The rule
//!
//! A response whose final usage was read (a `message_delta` carrying `output_tokens`, or
//! a complete JSON message with its `usage`) is charged exactly that. Otherwise the usage
//! is *estimated*, never below what the upstream reported so far:
//!
//! * **input**: what `message_start` reported; when nothing was reported (no event, an
//!   unreadable JSON body), the request's own estimate, `ceil(request body bytes / 3)`.
//! * **output**: `max(reported output_tokens, min(max_output, ceil(delivered bytes / 3)))`,
//!   where delivered bytes are the content the gateway relayed: for a stream, the raw JSON
//!   strings of every `text_delta`, `input_json_delta` and `thinking_delta` (see
//!   [`super::SseUsageTap::content_bytes`]); for a JSON body, every byte of it. Three bytes
//!   per token is conservative: English prose and code run about four, and JSON escapes
//!   only add bytes, so the estimate is rarely below the tokens that produced the text.
//!   `max_output` is the request's `max_tokens`: no response has more output tokens.
//!
//! Such a response is marked `usage_estimated` (log line, audit record, metric).

use super::Usage;

/// Bytes of delivered content counted as one output token.
pub const BYTES_PER_TOKEN: u64 = 3;

/// What a response delivered, as far as its billing goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Content bytes relayed (see the module docs).
    pub content_bytes: u64,
    /// Whether the response's final usage was read.
    pub final_usage: bool,
}

/// What the request itself says about its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSize {
    /// The request's input estimate, `ceil(body bytes / 3)`.
    pub input_tokens: u64,
    /// The most output tokens the response may have (`max_tokens`).
    pub max_output_tokens: u64,
}

/// The usage to charge and whether it was estimated; see the module docs.
pub fn charged_usage(reported: Option<Usage>, delivered: Delivered, request: RequestSize) -> (Usage, bool) {
    let mut usage = reported.unwrap_or_default();
    if delivered.final_usage {
        return (usage, false);
    }
    if usage.prompt_tokens() == 0 {
        usage.input_tokens = request.input_tokens;
    }
    let from_content = delivered
        .content_bytes
        .div_ceil(BYTES_PER_TOKEN)
        .min(request.max_output_tokens);
    usage.output_tokens = usage.output_tokens.max(from_content);
    (usage, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: RequestSize = RequestSize {
        input_tokens: 500,
        max_output_tokens: 1000,
    };

    #[test]
    fn a_final_usage_is_charged_as_reported() {
        let reported = Usage {
            input_tokens: 10,
            output_tokens: 7,
            ..Usage::default()
        };
        let delivered = Delivered {
            content_bytes: 9_000,
            final_usage: true,
        };
        assert_eq!(
            charged_usage(Some(reported), delivered, REQUEST),
            (reported, false)
        );
    }

    #[test]
    fn a_cut_stream_is_charged_for_its_content_never_below_what_was_reported() {
        let start = Usage {
            input_tokens: 40,
            cache_read_tokens: 2_000,
            output_tokens: 1,
            ..Usage::default()
        };
        let cut = |content_bytes| {
            charged_usage(
                Some(start),
                Delivered {
                    content_bytes,
                    final_usage: false,
                },
                REQUEST,
            )
        };
        let (u, estimated) = cut(20_000 * 3);
        assert!(estimated);
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens),
            (40, 2_000),
            "input as reported"
        );
        assert_eq!(u.output_tokens, 1_000, "never above max_tokens");
        assert_eq!(cut(301).0.output_tokens, 101, "rounded up");
        assert_eq!(cut(0).0.output_tokens, 1, "never below what was reported");
    }

    #[test]
    fn nothing_reported_charges_the_request_estimate_as_input() {
        let (u, estimated) = charged_usage(
            None,
            Delivered {
                content_bytes: 17 << 20,
                final_usage: false,
            },
            REQUEST,
        );
        assert!(estimated);
        assert_eq!((u.input_tokens, u.output_tokens), (500, 1_000));
    }
}
