//! OpenAI's error body, `{"error":{"message","type","param","code"}}`
//! (<https://platform.openai.com/docs/guides/error-codes>), and every gateway refusal in it.
//!
//! **Refusals.** One row per [`Denial`], with the status, `type` and `code` OpenAI itself sends
//! for the same condition, so OpenAI's SDKs and Codex CLI react as they do to OpenAI:
//!
//! | denial | status | `type` | `code` | extra headers |
//! | --- | --- | --- | --- | --- |
//! | missing key | 401 | `invalid_request_error` | null | |
//! | conflicting, unknown, disabled, expired key | 401 | `invalid_request_error` | `invalid_api_key` | |
//! | model not allowed for the key | 403 | `invalid_request_error` | `model_not_found` | |
//! | tool not allowed | 403 | `invalid_request_error` | null | |
//! | unknown model | 404 | `invalid_request_error` | `model_not_found` | |
//! | no route for the path | 404 | `invalid_request_error` | null | |
//! | invalid request | 400 | `invalid_request_error` | null | |
//! | body too large | 413 | `invalid_request_error` | null | `connection: close` |
//! | budget exhausted | 429 | `insufficient_quota` | `insufficient_quota` | `x-should-retry: false` |
//! | budget held by requests in flight | 429 | `requests` | `rate_limit_exceeded` | `retry-after`, `x-should-retry: true` |
//! | rate limited (requests, concurrency) | 429 | `requests` | `rate_limit_exceeded` | `retry-after`, `x-ratelimit-*-requests` |
//! | rate limited (tokens) | 429 | `tokens` | `rate_limit_exceeded` | `retry-after`, `x-ratelimit-*-tokens` |
//! | provider unavailable | 502 | `server_error` | null | |
//! | no policy, ledger unavailable | 503 | `server_error` | null | `retry-after` (ledger) |
//! | upstream timeout | 504 | `server_error` | null | |
//!
//! Why these: OpenAI answers a bad key with 401 `invalid_api_key` (a key the gateway disabled
//! or that expired is, to the client, a key that no longer works), a model the project may not
//! use with 403 `model_not_found` and one that does not exist with 404 `model_not_found`, an
//! exhausted credit balance or spend limit with 429 `insufficient_quota`, and a rate limit with
//! 429 `rate_limit_exceeded` whose `type` is the limited unit (`requests` or `tokens`). The
//! SDKs retry 408, 409, 429 and 5xx unless `x-should-retry: false`, honouring `retry-after`;
//! so the exhausted budget says `x-should-retry: false` (waiting does not help) and the rate
//! limits keep `retry-after`. 503s carry no `server_is_overloaded`/`slow_down` code: Codex
//! reads those as "model at capacity, try a different model", which is not the cause.
//!
//! What Codex CLI does with them (codex-rs `api_bridge.rs`, `error.rs`): a 400 is shown and
//! not retried; a 429 is not retried and is shown as "exceeded retry limit, last status: 429"
//! without the body's message (Codex reads a 429 body only for ChatGPT-plan
//! `usage_limit_reached`); other statuses are shown as "unexpected status N: <message>" after
//! Codex's turn retries.

use bytes::Bytes;
use http::StatusCode;

use crate::denial::Denial;

/// Serialises an OpenAI error body; `param` is always null.
pub fn error_body(kind: &str, code: Option<&str>, message: &str) -> Bytes {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code },
    });
    Bytes::from(body.to_string())
}

/// The status and `type`/`code` of a refusal; see the module docs.
struct Shape {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
}

fn shape(denial: &Denial) -> Shape {
    const INVALID: &str = "invalid_request_error";
    let (status, kind, code) = match denial {
        Denial::MissingKey => (StatusCode::UNAUTHORIZED, INVALID, None),
        Denial::ConflictingKeys
        | Denial::UnknownKey
        | Denial::DisabledKey { .. }
        | Denial::ExpiredKey { .. } => (StatusCode::UNAUTHORIZED, INVALID, Some("invalid_api_key")),
        // 404, as OpenAI answers for a model a key may not use: Codex CLI retries a 403 six
        // times (e2e/captures/README.md) but shows a 404 at once.
        Denial::ModelNotAllowed { .. } => (StatusCode::NOT_FOUND, INVALID, Some("model_not_found")),
        Denial::ToolNotAllowed { .. } => (StatusCode::BAD_REQUEST, INVALID, None),
        Denial::UnknownModel { .. } => (StatusCode::NOT_FOUND, INVALID, Some("model_not_found")),
        Denial::NotFound { .. } => (StatusCode::NOT_FOUND, INVALID, None),
        Denial::InvalidRequest { .. } => (StatusCode::BAD_REQUEST, INVALID, None),
        Denial::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, INVALID, None),
        Denial::BudgetExhausted { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        Denial::RateLimited { kind: "tokens", .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "tokens",
            Some("rate_limit_exceeded"),
        ),
        Denial::RateLimited { .. } | Denial::BudgetHeld { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
        ),
        Denial::ProviderUnavailable { .. } => (StatusCode::BAD_GATEWAY, "server_error", None),
        Denial::NoPolicy | Denial::LedgerUnavailable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "server_error", None)
        }
        Denial::UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "server_error", None),
    };
    Shape { status, kind, code }
}

/// The status and OpenAI error body for a gateway refusal; the message is
/// [`Denial::message`]. Send it with [`refusal_headers`].
pub fn refusal(denial: &Denial) -> (StatusCode, Bytes) {
    let shape = shape(denial);
    (shape.status, error_body(shape.kind, shape.code, &message(denial)))
}

/// [`Denial::message`], but for the key refusals, whose shared text names Claude Code's
/// variables: here the OpenAI clients' own.
fn message(denial: &Denial) -> String {
    match denial {
        Denial::MissingKey => {
            "tollgate: no virtual key: set OPENAI_API_KEY (sent as Authorization: Bearer) to your Tollgate virtual key".into()
        }
        Denial::ConflictingKeys => {
            "tollgate: the request carries different keys: send one virtual key, as Authorization: Bearer".into()
        }
        other => other.message(),
    }
}

/// The response headers for a refusal: [`Denial::headers`] without the Anthropic-only ones,
/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for a rate limit (the reset
/// as OpenAI writes it, `<seconds>s`), and `x-should-retry: false` for an exhausted budget.
pub fn refusal_headers(denial: &Denial) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = denial
        .headers()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("anthropic-"))
        .collect();
    match denial {
        Denial::RateLimited {
            kind,
            limit,
            retry_after_secs,
            ..
        } => {
            let unit = if *kind == "tokens" { "tokens" } else { "requests" };
            headers.extend([
                (format!("x-ratelimit-limit-{unit}"), limit.to_string()),
                (format!("x-ratelimit-remaining-{unit}"), "0".to_owned()),
                (
                    format!("x-ratelimit-reset-{unit}"),
                    format!("{retry_after_secs}s"),
                ),
            ]);
        }
        Denial::BudgetExhausted { .. } => headers.push(("x-should-retry".into(), "false".into())),
        _ => {}
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Denial {
        Denial::BudgetExhausted {
            budget: "team-week".into(),
            scope: "team 'platform'".into(),
            limit: 5_000_000,
            used: 4_990_000,
            estimate: 320_000,
            period: "weekly".into(),
            resets_at: "2026-11-30T00:00:00Z".into(),
        }
    }

    fn rate(kind: &'static str) -> Denial {
        Denial::RateLimited {
            scope: "key 'k1'".into(),
            kind,
            limit: 10,
            retry_after_secs: 17,
            reset_at: "2026-11-29T19:43:00Z".into(),
        }
    }

    /// Every row of the table: status, type, code, and the body's shape and message.
    #[test]
    fn every_denial_has_its_row() {
        let s = |s: &str| s.to_owned();
        let rows: Vec<(Denial, u16, &str, Option<&str>)> = vec![
            (Denial::MissingKey, 401, "invalid_request_error", None),
            (
                Denial::ConflictingKeys,
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            (
                Denial::UnknownKey,
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            (
                Denial::DisabledKey { key: s("k") },
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            (
                Denial::ExpiredKey {
                    key: s("k"),
                    at: s("2026-01-01T00:00:00Z"),
                },
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            (
                Denial::ModelNotAllowed {
                    model: s("gpt-5.5"),
                    served: None,
                    key: s("k"),
                    allowed: vec![s("gpt-5.4-mini")],
                },
                404,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            (
                Denial::ToolNotAllowed {
                    key: s("k"),
                    what: s("the MCP server 'x'"),
                },
                400,
                "invalid_request_error",
                None,
            ),
            (
                Denial::UnknownModel { model: s("gpt-9") },
                404,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            (
                Denial::NotFound { path: s("/v1/x") },
                404,
                "invalid_request_error",
                None,
            ),
            (
                Denial::InvalidRequest {
                    detail: s("model: field required"),
                },
                400,
                "invalid_request_error",
                None,
            ),
            (Denial::TooLarge { limit: 1 }, 413, "invalid_request_error", None),
            (budget(), 429, "insufficient_quota", Some("insufficient_quota")),
            (
                Denial::BudgetHeld {
                    budget: s("b"),
                    scope: s("key 'k'"),
                    period: s("daily"),
                    left: 2,
                    reserved: 1,
                    estimate: 3,
                    retry_after_secs: 2,
                },
                429,
                "requests",
                Some("rate_limit_exceeded"),
            ),
            (rate("requests"), 429, "requests", Some("rate_limit_exceeded")),
            (rate("concurrent"), 429, "requests", Some("rate_limit_exceeded")),
            (rate("tokens"), 429, "tokens", Some("rate_limit_exceeded")),
            (
                Denial::ProviderUnavailable {
                    provider: s("openai"),
                    detail: s("no credential"),
                },
                502,
                "server_error",
                None,
            ),
            (Denial::NoPolicy, 503, "server_error", None),
            (
                Denial::LedgerUnavailable {
                    detail: s("redis down"),
                },
                503,
                "server_error",
                None,
            ),
            (
                Denial::UpstreamTimeout {
                    provider: s("openai"),
                },
                504,
                "server_error",
                None,
            ),
        ];
        for (denial, status, kind, code) in rows {
            let (got_status, body) = refusal(&denial);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(got_status.as_u16(), status, "{denial:?}");
            assert_eq!(v["error"]["type"], kind, "{denial:?}");
            assert_eq!(v["error"]["code"].as_str(), code, "{denial:?}");
            assert_eq!(v["error"]["message"], message(&denial), "{denial:?}");
            assert!(!message(&denial).contains("ANTHROPIC_"), "{denial:?}");
            assert!(v["error"]["param"].is_null());
            assert_eq!(v.as_object().unwrap().len(), 1, "only `error` at the top");
        }
    }

    #[test]
    fn headers_keep_retry_after_and_speak_openai() {
        let h = refusal_headers(&rate("tokens"));
        assert_eq!(
            h,
            [
                ("retry-after", "17"),
                ("x-ratelimit-limit-tokens", "10"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "17s"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let h = refusal_headers(&rate("concurrent"));
        assert!(h.contains(&("x-ratelimit-limit-requests".into(), "10".into())));
        assert!(!h.iter().any(|(k, _)| k.starts_with("anthropic-")), "{h:?}");
        assert_eq!(
            refusal_headers(&budget()),
            [("x-should-retry".to_owned(), "false".to_owned())]
        );
        let held = Denial::BudgetHeld {
            budget: "b".into(),
            scope: "key 'k'".into(),
            period: "daily".into(),
            left: 2,
            reserved: 1,
            estimate: 3,
            retry_after_secs: 4,
        };
        let h = refusal_headers(&held);
        assert!(h.contains(&("retry-after".into(), "4".into())));
        assert!(h.contains(&("x-should-retry".into(), "true".into())));
        assert!(
            refusal_headers(&Denial::LedgerUnavailable { detail: "x".into() })
                .contains(&("retry-after".into(), "5".into()))
        );
        assert_eq!(
            refusal_headers(&Denial::TooLarge { limit: 1 }),
            [("connection".to_owned(), "close".to_owned())]
        );
        assert!(refusal_headers(&Denial::UnknownKey).is_empty());
    }

    #[test]
    fn error_body_is_openai_shaped_and_escapes() {
        let b = error_body("server_error", None, "a \"quoted\"\nline");
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"error":{"code":null,"message":"a \"quoted\"\nline","param":null,"type":"server_error"}}"#
        );
        let b = error_body("invalid_request_error", Some("invalid_api_key"), "m");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
}
