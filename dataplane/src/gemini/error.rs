//! Google's error shape, and the gateway's refusals in it for Gemini CLI.
//!
//! Google answers errors as `{"error": {"code": 400, "message": "...", "status":
//! "INVALID_ARGUMENT", "details": [...]}}` (<https://ai.google.dev/gemini-api/docs/troubleshooting>,
//! <https://cloud.google.com/apis/design/errors>). Every refusal carries an `ErrorInfo` detail
//! with domain `tollgate` and the refusal's reason (`BUDGET_EXHAUSTED`, ...), and a
//! `RetryInfo` detail when waiting helps.
//!
//! **How Gemini CLI reacts** (read in google-gemini/gemini-cli at 5411f11, Aug 2026:
//! `packages/core/src/utils/retry.ts`, `googleQuotaErrors.ts`, `errorParsing.ts`,
//! `packages/cli/src/ui/hooks/useQuotaAndFallback.ts`):
//! - 400, 401, 402, 403: not retried; shown as `[API Error: <message>]`. (A 403 is special
//!   only with a Cloud Code `VALIDATION_REQUIRED` ErrorInfo, which the gateway never sends.)
//!   Google answers an invalid API key with 400 `INVALID_ARGUMENT` ("API key not valid"), so
//!   the gateway does too; 401 would behave the same.
//! - 404: a `ModelNotFoundError`: not retried; the model fallback dialog opens ("Model X was
//!   not found or is invalid. /model to switch models").
//! - 429 (and 499, 503): a quota error. With a `RetryInfo.retryDelay` of at most 300 s it is
//!   retryable: Gemini CLI waits that long (plus up to 20%) and retries, up to 10 attempts.
//!   With a longer delay, a `QuotaFailure` naming a daily quota, or "limit: 0" in the message,
//!   it is terminal: no retry; the fallback dialog offers another model (interactive), or
//!   the error is shown. A 429 without details is retried with backoff (5 s doubling to
//!   30 s) for 10 attempts, then falls back to a Flash model: never what a spent budget
//!   should get. With an API key, the shown message gets "Please wait and try again
//!   later..." appended.
//! - 5xx: retried with backoff, 10 attempts.
//!
//! So a spent budget is a 429 `RESOURCE_EXHAUSTED` whose `RetryInfo` is the time to the
//! budget's reset: more than 300 s stops Gemini CLI at once (a Flash fallback it offers is
//! refused the same way: budgets do not depend on the model), a reset within 300 s is
//! waited for. Rate limits and held budgets are 429s with their `retry-after` as
//! `RetryInfo`, which Gemini CLI honours.

use bytes::Bytes;
use http::StatusCode;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::denial::Denial;

/// `@type` of the `google.rpc.ErrorInfo` detail.
pub const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";
/// `@type` of the `google.rpc.RetryInfo` detail.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";
/// The `ErrorInfo.domain` of the gateway's refusals.
pub const ERROR_DOMAIN: &str = "tollgate";

/// The retry delay of a spent budget whose reset time cannot be read: long enough that
/// Gemini CLI treats it as terminal (the message still says when the budget resets).
const UNKNOWN_RESET_SECS: u64 = 86_400;
/// The retry delay while the spend ledger is unavailable (as [`Denial::headers`] says).
const LEDGER_RETRY_SECS: u64 = 5;

/// A Google error body: `{"error":{"code":..,"message":..,"status":..}}`.
pub fn error_body(code: u16, status: &str, message: &str) -> Bytes {
    body_with_details(code, status, message, Vec::new())
}

fn body_with_details(code: u16, status: &str, message: &str, details: Vec<Value>) -> Bytes {
    let mut error = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    Bytes::from(json!({ "error": error }).to_string())
}

/// The HTTP status and Google status of each refusal: the one table (see the module docs
/// for why each).
fn row(denial: &Denial) -> (StatusCode, &'static str) {
    const BAD: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    const FORBIDDEN: (StatusCode, &str) = (StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    const NOT_FOUND: (StatusCode, &str) = (StatusCode::NOT_FOUND, "NOT_FOUND");
    const EXHAUSTED: (StatusCode, &str) = (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    const UNAVAILABLE: (StatusCode, &str) = (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    match denial {
        // Google: a request without a key is 403 PERMISSION_DENIED.
        Denial::MissingKey => FORBIDDEN,
        // Google: an invalid or expired key is 400 INVALID_ARGUMENT.
        Denial::ConflictingKeys | Denial::UnknownKey | Denial::ExpiredKey { .. } => BAD,
        Denial::DisabledKey { .. } | Denial::ModelNotAllowed { .. } | Denial::ToolNotAllowed { .. } => {
            FORBIDDEN
        }
        Denial::UnknownModel { .. } | Denial::NotFound { .. } => NOT_FOUND,
        // Google: "Request payload size exceeds the limit" is 400 INVALID_ARGUMENT.
        Denial::InvalidRequest { .. } | Denial::TooLarge { .. } => BAD,
        Denial::NoPolicy | Denial::ProviderUnavailable { .. } | Denial::LedgerUnavailable { .. } => {
            UNAVAILABLE
        }
        Denial::UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        Denial::BudgetExhausted { .. } | Denial::BudgetHeld { .. } | Denial::RateLimited { .. } => EXHAUSTED,
    }
}

/// The message Gemini CLI shows: [`Denial::message`], except where that names Anthropic
/// settings.
fn message(denial: &Denial) -> String {
    match denial {
        Denial::MissingKey => "tollgate: no virtual key: set GEMINI_API_KEY to your Tollgate virtual key \
                               (sent as the x-goog-api-key header)"
            .into(),
        Denial::ConflictingKeys => "tollgate: x-goog-api-key and the key query parameter (or repeated ones) \
                                    carry different keys: send one virtual key"
            .into(),
        other => other.message(),
    }
}

/// Seconds until a retry can succeed, when waiting helps: the rate limit's or held
/// budget's `retry-after`, a spent budget's time to its reset (at least 1 s), the ledger's
/// 5 s. `now` is the current time.
pub fn retry_delay_secs(denial: &Denial, now: Timestamp) -> Option<u64> {
    match denial {
        Denial::RateLimited { retry_after_secs, .. } | Denial::BudgetHeld { retry_after_secs, .. } => {
            Some((*retry_after_secs).max(1))
        }
        Denial::BudgetExhausted { resets_at, .. } => Some(resets_at.parse::<Timestamp>().ok().map_or(
            UNKNOWN_RESET_SECS,
            |reset| {
                let secs = reset.duration_since(now).as_secs();
                u64::try_from(secs).unwrap_or(0).max(1)
            },
        )),
        Denial::LedgerUnavailable { .. } => Some(LEDGER_RETRY_SECS),
        _ => None,
    }
}

/// The refusal as Gemini CLI gets it, at the current time; see [`refusal_at`].
pub fn refusal(denial: &Denial) -> (StatusCode, Bytes) {
    refusal_at(denial, Timestamp::now())
}

/// The status and Google error body for `denial` at `now` (see the module docs): an
/// `ErrorInfo` with the refusal's reason, and a `RetryInfo` when waiting helps.
pub fn refusal_at(denial: &Denial, now: Timestamp) -> (StatusCode, Bytes) {
    let (status, google) = row(denial);
    let mut details = vec![json!({
        "@type": ERROR_INFO_TYPE,
        "reason": denial.reason().to_ascii_uppercase(),
        "domain": ERROR_DOMAIN,
    })];
    if let Some(secs) = retry_delay_secs(denial, now) {
        details.push(json!({"@type": RETRY_INFO_TYPE, "retryDelay": format!("{secs}s")}));
    }
    let body = body_with_details(status.as_u16(), google, &message(denial), details);
    (status, body)
}

/// Extra response headers for the refusal at `now`: `retry-after` when waiting helps, and
/// [`Denial::headers`]' `connection: close` for an unread body (its Anthropic rate-limit
/// headers are not Google's and are left out).
pub fn refusal_headers(denial: &Denial, now: Timestamp) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = denial
        .headers()
        .into_iter()
        .filter(|(name, _)| name == "connection")
        .collect();
    if let Some(secs) = retry_delay_secs(denial, now) {
        headers.push(("retry-after".into(), secs.to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-29T19:42:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn budget(resets_at: &str) -> Denial {
        Denial::BudgetExhausted {
            budget: "team-week".into(),
            scope: "team 'platform'".into(),
            limit: 5_000_000,
            used: 4_990_000,
            estimate: 320_000,
            period: "weekly".into(),
            resets_at: resets_at.into(),
        }
    }

    /// One refusal read back: HTTP status, Google status, message, reason, retry delay.
    fn read(denial: &Denial) -> (u16, String, String, String, Option<String>) {
        let (status, body) = refusal_at(denial, now());
        let v: Value = serde_json::from_slice(&body).unwrap();
        let e = &v["error"];
        assert_eq!(e["code"], status.as_u16(), "code matches the HTTP status");
        assert_eq!(e["details"][0]["@type"], ERROR_INFO_TYPE);
        assert_eq!(e["details"][0]["domain"], ERROR_DOMAIN);
        let retry = e["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["@type"] == RETRY_INFO_TYPE)
            .map(|d| d["retryDelay"].as_str().unwrap().to_owned());
        (
            status.as_u16(),
            e["status"].as_str().unwrap().to_owned(),
            e["message"].as_str().unwrap().to_owned(),
            e["details"][0]["reason"].as_str().unwrap().to_owned(),
            retry,
        )
    }

    /// Checks one row: status, Google status, the message (`denial.message()` unless
    /// given), and the retry delay.
    fn row_is(denial: Denial, status: u16, google: &str, message: Option<&str>, retry: Option<&str>) {
        let (s, g, m, reason, r) = read(&denial);
        assert_eq!((s, g.as_str()), (status, google), "{denial:?}");
        assert_eq!(
            m,
            message.map_or_else(|| denial.message(), str::to_owned),
            "{denial:?}"
        );
        assert_eq!(reason, denial.reason().to_ascii_uppercase());
        assert_eq!(r.as_deref(), retry, "{denial:?}");
    }

    #[test]
    fn error_body_is_googles_shape() {
        let b = error_body(400, "INVALID_ARGUMENT", "bad \"x\"");
        assert_eq!(
            &b[..],
            br#"{"error":{"code":400,"message":"bad \"x\"","status":"INVALID_ARGUMENT"}}"#
        );
    }

    #[test]
    fn missing_key_is_403_and_names_gemini_settings() {
        let (_, _, m, _, _) = read(&Denial::MissingKey);
        assert!(m.contains("GEMINI_API_KEY") && !m.contains("ANTHROPIC"), "{m}");
        row_is(Denial::MissingKey, 403, "PERMISSION_DENIED", Some(&m), None);
    }

    #[test]
    fn conflicting_keys_are_400() {
        let (_, _, m, _, _) = read(&Denial::ConflictingKeys);
        assert!(m.contains("x-goog-api-key") && !m.contains("ANTHROPIC"), "{m}");
        row_is(Denial::ConflictingKeys, 400, "INVALID_ARGUMENT", Some(&m), None);
    }

    #[test]
    fn unknown_key_is_400_like_google() {
        row_is(Denial::UnknownKey, 400, "INVALID_ARGUMENT", None, None);
    }

    #[test]
    fn disabled_key_is_403() {
        row_is(
            Denial::DisabledKey { key: "k".into() },
            403,
            "PERMISSION_DENIED",
            None,
            None,
        );
    }

    #[test]
    fn expired_key_is_400_like_google() {
        row_is(
            Denial::ExpiredKey {
                key: "k".into(),
                at: "2026-01-01T00:00:00Z".into(),
            },
            400,
            "INVALID_ARGUMENT",
            None,
            None,
        );
    }

    #[test]
    fn model_not_allowed_is_403() {
        row_is(
            Denial::ModelNotAllowed {
                model: "gemini-2.5-pro".into(),
                served: None,
                key: "k".into(),
                allowed: vec!["gemini-2.5-flash*".into()],
            },
            403,
            "PERMISSION_DENIED",
            None,
            None,
        );
    }

    #[test]
    fn unknown_model_is_404() {
        row_is(
            Denial::UnknownModel {
                model: "gemini-9".into(),
            },
            404,
            "NOT_FOUND",
            None,
            None,
        );
    }

    #[test]
    fn tool_not_allowed_is_403() {
        row_is(
            Denial::ToolNotAllowed {
                key: "k".into(),
                what: "x".into(),
            },
            403,
            "PERMISSION_DENIED",
            None,
            None,
        );
    }

    #[test]
    fn invalid_request_is_400() {
        row_is(
            Denial::InvalidRequest {
                detail: "generationConfig.maxOutputTokens: must be an integer".into(),
            },
            400,
            "INVALID_ARGUMENT",
            None,
            None,
        );
    }

    #[test]
    fn too_large_is_400_like_google_and_closes_the_connection() {
        let d = Denial::TooLarge { limit: 1 << 20 };
        row_is(d.clone(), 400, "INVALID_ARGUMENT", None, None);
        assert_eq!(
            refusal_headers(&d, now()),
            vec![("connection".to_owned(), "close".to_owned())]
        );
    }

    #[test]
    fn not_found_is_404() {
        row_is(
            Denial::NotFound {
                path: "/gemini/v1/x".into(),
            },
            404,
            "NOT_FOUND",
            None,
            None,
        );
    }

    #[test]
    fn no_policy_is_503() {
        row_is(Denial::NoPolicy, 503, "UNAVAILABLE", None, None);
    }

    #[test]
    fn provider_unavailable_is_503() {
        row_is(
            Denial::ProviderUnavailable {
                provider: "gemini".into(),
                detail: "no credential".into(),
            },
            503,
            "UNAVAILABLE",
            None,
            None,
        );
    }

    #[test]
    fn upstream_timeout_is_504() {
        row_is(
            Denial::UpstreamTimeout {
                provider: "gemini".into(),
            },
            504,
            "DEADLINE_EXCEEDED",
            None,
            None,
        );
    }

    #[test]
    fn budget_exhausted_is_429_until_the_reset() {
        // Resets in a day: a delay Gemini CLI treats as terminal (over 300 s).
        let d = budget("2026-11-30T19:42:00Z");
        row_is(d.clone(), 429, "RESOURCE_EXHAUSTED", None, Some("86400s"));
        let (_, _, m, _, _) = read(&d);
        assert!(
            m.contains("budget 'team-week'") && m.contains("is exhausted"),
            "{m}"
        );
        assert!(
            !m.contains("limit:"),
            "no 'limit: 0' for Gemini CLI to misread: {m}"
        );
        assert_eq!(
            refusal_headers(&d, now()),
            vec![("retry-after".to_owned(), "86400".to_owned())]
        );
        // Resets in 2 minutes: waited for.
        row_is(
            budget("2026-11-29T19:44:00Z"),
            429,
            "RESOURCE_EXHAUSTED",
            None,
            Some("120s"),
        );
        // Already past (a clock skew): retry at once.
        row_is(
            budget("2026-11-29T19:00:00Z"),
            429,
            "RESOURCE_EXHAUSTED",
            None,
            Some("1s"),
        );
        // Unreadable: terminal.
        row_is(budget("soon"), 429, "RESOURCE_EXHAUSTED", None, Some("86400s"));
    }

    #[test]
    fn budget_held_is_429_with_its_retry_after() {
        row_is(
            Denial::BudgetHeld {
                budget: "b".into(),
                scope: "key 'k'".into(),
                period: "daily".into(),
                left: 2_000_000,
                reserved: 1_900_000,
                estimate: 320_000,
                retry_after_secs: 3,
            },
            429,
            "RESOURCE_EXHAUSTED",
            None,
            Some("3s"),
        );
    }

    #[test]
    fn rate_limited_is_429_with_its_retry_after_and_no_anthropic_headers() {
        let d = Denial::RateLimited {
            scope: "key 'k1'".into(),
            kind: "requests",
            limit: 10,
            retry_after_secs: 17,
            reset_at: "2026-11-29T19:43:00Z".into(),
        };
        row_is(d.clone(), 429, "RESOURCE_EXHAUSTED", None, Some("17s"));
        assert_eq!(
            refusal_headers(&d, now()),
            vec![("retry-after".to_owned(), "17".to_owned())]
        );
    }

    #[test]
    fn ledger_unavailable_is_503_retried_in_5s() {
        row_is(
            Denial::LedgerUnavailable {
                detail: "redis down".into(),
            },
            503,
            "UNAVAILABLE",
            None,
            Some("5s"),
        );
    }

    #[test]
    fn refusal_uses_the_current_time() {
        let (status, body) = refusal(&budget("2000-01-01T00:00:00Z"));
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains(r#""retryDelay":"1s""#)
        );
    }
}
