//! Every reason the gateway refuses a request, with the status chosen for how Claude Code
//! reacts to it: 401 is retried silently for minutes (and re-runs `apiKeyHelper`), 402 and
//! 403 are shown at once and not retried, 429 is retried with backoff.

/// A refusal by the gateway itself (upstream errors pass through unchanged instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No key in `Authorization: Bearer` or `x-api-key`.
    MissingKey,
    /// `Authorization` and `x-api-key` (or repeated headers) carry different keys.
    ConflictingKeys,
    /// The key's hash is not in the policy (never issued, revoked or rotated).
    UnknownKey,
    /// The key exists but is disabled.
    DisabledKey {
        /// Key id.
        key: String,
    },
    /// The key's expiry has passed.
    ExpiredKey {
        /// Key id.
        key: String,
        /// When it expired.
        at: String,
    },
    /// The key (or its team) may not use the model.
    ModelNotAllowed {
        /// Requested model.
        model: String,
        /// The model a route would serve it as, when that name is the one refused.
        served: Option<String>,
        /// Key id.
        key: String,
        /// The key's allow patterns.
        allowed: Vec<String>,
    },
    /// No route serves the model.
    UnknownModel {
        /// Requested model.
        model: String,
    },
    /// The request offers the model tools the key's (or team's) tool policy does not permit,
    /// and they cannot simply be removed (the tools of an MCP connector server).
    ToolNotAllowed {
        /// Key id.
        key: String,
        /// What is not permitted.
        what: String,
    },
    /// The body is not a Messages request.
    InvalidRequest {
        /// What is wrong.
        detail: String,
    },
    /// The body exceeds the size limit.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No path or method matches.
    NotFound {
        /// The path requested.
        path: String,
    },
    /// The proxy has no valid policy yet.
    NoPolicy,
    /// The provider cannot be called (no credential, unreachable).
    ProviderUnavailable {
        /// Provider id.
        provider: String,
        /// Why (never a secret).
        detail: String,
    },
    /// The provider did not answer in time.
    UpstreamTimeout {
        /// Provider id.
        provider: String,
    },
    /// A budget's settled spend leaves no room for this request.
    BudgetExhausted {
        /// Budget id.
        budget: String,
        /// `organization`, `team`, `user` or `key`, and its name.
        scope: String,
        /// The limit, micro-USD.
        limit: u64,
        /// Settled spend in the window, micro-USD.
        used: u64,
        /// This request's estimate, micro-USD.
        estimate: u64,
        /// Period name.
        period: String,
        /// When the window resets (RFC 3339).
        resets_at: String,
    },
    /// A budget has room for this request, but requests in flight hold it; waiting helps.
    BudgetHeld {
        /// Budget id.
        budget: String,
        /// `organization`, `team`, `user` or `key`, and its name.
        scope: String,
        /// Period name.
        period: String,
        /// Room left by the settled spend (limit - spent), micro-USD.
        left: u64,
        /// Reserved by requests in flight, micro-USD.
        reserved: u64,
        /// This request's estimate, micro-USD.
        estimate: u64,
        /// Whole seconds until a retry can succeed.
        retry_after_secs: u64,
    },
    /// A rate limit is reached; waiting helps.
    RateLimited {
        /// `key 'ID'` or `team 'ID'`.
        scope: String,
        /// `requests`, `tokens` or `concurrent`.
        kind: &'static str,
        /// The limit.
        limit: u64,
        /// Whole seconds until a retry can succeed.
        retry_after_secs: u64,
        /// When the window resets (RFC 3339).
        reset_at: String,
    },
    /// The shared ledger is unreachable and the policy fails closed.
    LedgerUnavailable {
        /// The cause (no secrets).
        detail: String,
    },
}

impl Denial {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Denial::MissingKey | Denial::ConflictingKeys | Denial::UnknownKey => 401,
            Denial::DisabledKey { .. }
            | Denial::ExpiredKey { .. }
            | Denial::ModelNotAllowed { .. }
            | Denial::ToolNotAllowed { .. } => 403,
            Denial::UnknownModel { .. } | Denial::NotFound { .. } => 404,
            Denial::InvalidRequest { .. } => 400,
            Denial::TooLarge { .. } => 413,
            Denial::NoPolicy => 503,
            Denial::ProviderUnavailable { .. } => 502,
            Denial::UpstreamTimeout { .. } => 504,
            Denial::BudgetExhausted { .. } => 402,
            Denial::RateLimited { .. } | Denial::BudgetHeld { .. } => 429,
            Denial::LedgerUnavailable { .. } => 503,
        }
    }

    /// Anthropic error type.
    pub fn error_type(&self) -> &'static str {
        match self.status() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            429 => "rate_limit_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            _ => "api_error",
        }
    }

    /// Short reason, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::MissingKey => "missing_key",
            Denial::ConflictingKeys => "conflicting_keys",
            Denial::UnknownKey => "unknown_key",
            Denial::DisabledKey { .. } => "disabled_key",
            Denial::ExpiredKey { .. } => "expired_key",
            Denial::ModelNotAllowed { .. } => "model_not_allowed",
            Denial::UnknownModel { .. } => "unknown_model",
            Denial::ToolNotAllowed { .. } => "tool_not_allowed",
            Denial::InvalidRequest { .. } => "invalid_request",
            Denial::TooLarge { .. } => "too_large",
            Denial::NotFound { .. } => "not_found",
            Denial::NoPolicy => "no_policy",
            Denial::ProviderUnavailable { .. } => "provider_unavailable",
            Denial::UpstreamTimeout { .. } => "upstream_timeout",
            Denial::BudgetExhausted { .. } => "budget_exhausted",
            Denial::BudgetHeld { .. } => "budget_held",
            Denial::RateLimited { kind: "requests", .. } => "rate_limited_requests",
            Denial::RateLimited { kind: "tokens", .. } => "rate_limited_tokens",
            Denial::RateLimited { .. } => "rate_limited_concurrency",
            Denial::LedgerUnavailable { .. } => "ledger_unavailable",
        }
    }

    /// The message the engineer sees. Never contains a secret.
    pub fn message(&self) -> String {
        match self {
            Denial::MissingKey => "tollgate: no virtual key: set ANTHROPIC_AUTH_TOKEN (or ANTHROPIC_API_KEY) to your Tollgate virtual key".into(),
            Denial::ConflictingKeys => "tollgate: Authorization and x-api-key carry different keys: send one virtual key (set only one of ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY, or the same key in both)".into(),
            Denial::UnknownKey => "tollgate: invalid virtual key (unknown, revoked or rotated): ask your platform team for a current key".into(),
            Denial::DisabledKey { key } => format!("tollgate: virtual key '{key}' is disabled"),
            Denial::ExpiredKey { key, at } => format!("tollgate: virtual key '{key}' expired at {at}"),
            Denial::ModelNotAllowed { model, served, key, allowed } => {
                let allowed = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
                let served = served.as_ref().map(|s| format!(" (served as '{s}')")).unwrap_or_default();
                format!("tollgate: model '{model}'{served} is not allowed for virtual key '{key}' (allowed: {allowed})")
            }
            Denial::UnknownModel { model } => format!("tollgate: model '{model}' is not served by this gateway"),
            Denial::ToolNotAllowed { key, what } => {
                format!("tollgate: {what} is not permitted by the tool policy of virtual key '{key}'")
            }
            Denial::InvalidRequest { detail } => format!("tollgate: invalid request: {detail}"),
            Denial::TooLarge { limit } => format!("tollgate: request body exceeds {limit} bytes"),
            Denial::NotFound { path } => format!("tollgate: no route for {path}"),
            Denial::NoPolicy => "tollgate: the gateway has no valid policy loaded yet".into(),
            Denial::ProviderUnavailable { provider, detail } => {
                format!("tollgate: provider '{provider}' is unavailable: {detail}")
            }
            Denial::UpstreamTimeout { provider } => format!("tollgate: provider '{provider}' did not answer in time"),
            Denial::BudgetExhausted { budget, scope, limit, used, estimate, period, resets_at } => {
                use crate::limits::plan::dollars;
                format!(
                    "tollgate: {period} budget '{budget}' of {scope} is exhausted: {} of {} used; \
                     this request needs about {}. It resets at {resets_at}.",
                    dollars(*used),
                    dollars(*limit),
                    dollars(*estimate)
                )
            }
            Denial::BudgetHeld { budget, scope, period, left, reserved, estimate, retry_after_secs } => {
                use crate::limits::plan::dollars;
                format!(
                    "tollgate: {period} budget '{budget}' of {scope} has {} left, but {} of it is held by requests \
                     in flight and this request needs about {}; retry in {retry_after_secs} s",
                    dollars(*left),
                    dollars(*reserved),
                    dollars(*estimate)
                )
            }
            Denial::RateLimited { scope, kind, limit, retry_after_secs, .. } => {
                let what = match *kind {
                    "requests" => "requests per minute",
                    "tokens" => "tokens per minute",
                    _ => "concurrent requests",
                };
                format!("tollgate: rate limit of {limit} {what} for {scope} reached; retry in {retry_after_secs} s")
            }
            Denial::LedgerUnavailable { detail } => {
                format!("tollgate: the spend ledger is unavailable and this gateway fails closed: {detail}")
            }
        }
    }

    /// Extra response headers: `retry-after` and `anthropic-ratelimit-*` for rate limits.
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            Denial::RateLimited {
                kind,
                limit,
                retry_after_secs,
                reset_at,
                ..
            } => {
                let class = if *kind == "tokens" { "tokens" } else { "requests" };
                vec![
                    ("retry-after".into(), retry_after_secs.to_string()),
                    (format!("anthropic-ratelimit-{class}-limit"), limit.to_string()),
                    (format!("anthropic-ratelimit-{class}-remaining"), "0".into()),
                    (format!("anthropic-ratelimit-{class}-reset"), reset_at.clone()),
                ]
            }
            Denial::BudgetHeld { retry_after_secs, .. } => vec![
                ("retry-after".into(), retry_after_secs.to_string()),
                ("x-should-retry".into(), "true".into()),
            ],
            Denial::LedgerUnavailable { .. } => vec![("retry-after".into(), "5".into())],
            // The body was not read: do not keep the connection for the next request.
            Denial::TooLarge { .. } => vec![("connection".into(), "close".into())],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Denial;

    #[test]
    fn statuses_follow_claude_code_retry_behaviour() {
        let d = |d: Denial| (d.status(), d.error_type());
        assert_eq!(d(Denial::UnknownKey), (401, "authentication_error"));
        assert_eq!(
            d(Denial::DisabledKey { key: "k".into() }),
            (403, "permission_error")
        );
        let m = Denial::ModelNotAllowed {
            model: "claude-opus-4-8".into(),
            served: None,
            key: "k".into(),
            allowed: vec!["gw-haiku".into()],
        };
        assert_eq!(d(m.clone()), (403, "permission_error"));
        assert!(m.message().contains("'claude-opus-4-8' is not allowed") && m.message().contains("gw-haiku"));
        assert_eq!(d(Denial::TooLarge { limit: 1 }), (413, "request_too_large"));
        let t = Denial::ToolNotAllowed {
            key: "k".into(),
            what: "the MCP connector server 'fs' at h/p".into(),
        };
        assert_eq!(
            (d(t.clone()), t.reason()),
            ((403, "permission_error"), "tool_not_allowed")
        );
        assert_eq!(
            t.message(),
            "tollgate: the MCP connector server 'fs' at h/p is not permitted by the tool policy of virtual key 'k'"
        );
        assert_eq!(d(Denial::NoPolicy), (503, "api_error"));
        let b = Denial::BudgetExhausted {
            budget: "team-week".into(),
            scope: "team 'platform'".into(),
            limit: 5_000_000,
            used: 4_990_000,
            estimate: 320_000,
            period: "weekly".into(),
            resets_at: "2026-11-30T00:00:00Z".into(),
        };
        assert_eq!(d(b.clone()), (402, "billing_error"));
        let m = b.message();
        assert!(
            m.contains("weekly budget 'team-week' of team 'platform' is exhausted"),
            "{m}"
        );
        assert!(
            m.contains("$4.99 of $5.00")
                && m.contains("about $0.32")
                && m.contains("resets at 2026-11-30T00:00:00Z"),
            "{m}"
        );
        let held = Denial::BudgetHeld {
            budget: "team-week".into(),
            scope: "team 'platform'".into(),
            period: "weekly".into(),
            left: 2_000_000,
            reserved: 1_900_000,
            estimate: 320_000,
            retry_after_secs: 1,
        };
        assert_eq!(d(held.clone()), (429, "rate_limit_error"));
        assert!(
            held.message()
                .contains("$2.00 left, but $1.90 of it is held by requests in flight")
        );
        assert!(held.headers().contains(&("retry-after".into(), "1".into())));
        assert_eq!(d(Denial::ConflictingKeys), (401, "authentication_error"));
        let served = Denial::ModelNotAllowed {
            model: "gw-opus".into(),
            served: Some("claude-opus-4-8".into()),
            key: "k".into(),
            allowed: vec![],
        };
        assert!(
            served
                .message()
                .contains("model 'gw-opus' (served as 'claude-opus-4-8') is not allowed")
        );
        let r = Denial::RateLimited {
            scope: "key 'k1'".into(),
            kind: "requests",
            limit: 10,
            retry_after_secs: 17,
            reset_at: "2026-11-29T19:43:00Z".into(),
        };
        assert_eq!(d(r.clone()), (429, "rate_limit_error"));
        let h = r.headers();
        assert!(h.contains(&("retry-after".into(), "17".into())), "{h:?}");
        assert!(
            h.contains(&("anthropic-ratelimit-requests-remaining".into(), "0".into())),
            "{h:?}"
        );
    }
}
