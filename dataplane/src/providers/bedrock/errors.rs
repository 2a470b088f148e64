//! Bedrock errors as Anthropic errors: one table, each status chosen for what Claude Code does
//! with it (it retries 429 and 5xx, shows 400s' messages and matches their wording, asks its
//! user to log in again on 401, which is why a refused gateway credential is never 401).

use http::StatusCode;

/// One row: a Bedrock exception and the Anthropic error the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The exception name (matched case-insensitively: event streams use `throttlingException`).
    pub exception: &'static str,
    /// The client's status.
    pub status: u16,
    /// The Anthropic `error.type`.
    pub error_type: &'static str,
    /// Whether the gateway's own AWS credentials were refused.
    pub credentials: bool,
}

const fn row(exception: &'static str, status: u16, error_type: &'static str) -> Mapping {
    Mapping {
        exception,
        status,
        error_type,
        credentials: false,
    }
}

const fn creds(exception: &'static str) -> Mapping {
    Mapping {
        exception,
        status: 502,
        error_type: "api_error",
        credentials: true,
    }
}

/// The message a client gets when Bedrock refuses the gateway's credentials.
pub const CREDENTIALS_REFUSED: &str = "the gateway's AWS credentials were refused by Bedrock";

/// Every Bedrock exception with a mapping of its own.
pub const TABLE: &[Mapping] = &[
    // The message is kept verbatim: Claude Code matches wording such as "prompt is too long".
    row("ValidationException", 400, "invalid_request_error"),
    row("AccessDeniedException", 403, "permission_error"),
    row("ResourceNotFoundException", 404, "not_found_error"),
    row("ThrottlingException", 429, "rate_limit_error"),
    row("ServiceQuotaExceededException", 429, "rate_limit_error"),
    row("ModelNotReadyException", 529, "overloaded_error"),
    row("ServiceUnavailableException", 529, "overloaded_error"),
    row("InternalServerException", 500, "api_error"),
    // Anthropic's own status for a request that timed out; Claude Code retries it.
    row("ModelTimeoutException", 504, "timeout_error"),
    row("ModelErrorException", 500, "api_error"),
    row("ModelStreamErrorException", 500, "api_error"),
    creds("UnrecognizedClientException"),
    creds("InvalidSignatureException"),
    creds("ExpiredTokenException"),
    creds("IncompleteSignatureException"),
    creds("MissingAuthenticationTokenException"),
];

/// The exception name from `x-amzn-ErrorType` (`Name:http://internal...`) or a `__type`
/// member (`com.amazon.coral...#Name`).
pub fn exception_name(raw: &str) -> &str {
    let name = raw.split(':').next().unwrap_or(raw);
    name.rsplit('#').next().unwrap_or(name).trim()
}

/// The mapping for exception `name` (any case); `None` when it has no row of its own.
pub fn lookup(name: &str) -> Option<&'static Mapping> {
    let name = exception_name(name);
    TABLE.iter().find(|m| m.exception.eq_ignore_ascii_case(name))
}

/// The mapping for a non-2xx answer: by exception name when there is one, else by status.
pub fn classify(exception: Option<&str>, status: StatusCode) -> Mapping {
    if let Some(m) = exception.and_then(lookup) {
        return *m;
    }
    match status.as_u16() {
        // AWS answers an unsigned, badly signed or unknown-key request with 403 (typed or not).
        403 => creds("(untyped 403)"),
        400 => row("", 400, "invalid_request_error"),
        404 => row("", 404, "not_found_error"),
        408 => row("", 504, "timeout_error"),
        413 => row("", 413, "request_too_large"),
        424 => row("", 500, "api_error"),
        429 => row("", 429, "rate_limit_error"),
        503 => row("", 529, "overloaded_error"),
        s if (400..500).contains(&s) => row("", s, "invalid_request_error"),
        _ => row("", 500, "api_error"),
    }
}

/// The message the client sees for `mapping` given Bedrock's `message`.
pub fn client_message(mapping: &Mapping, exception: Option<&str>, message: &str) -> String {
    if mapping.credentials {
        let name = exception.map(exception_name).unwrap_or("HTTP 403");
        return if message.is_empty() {
            format!("{CREDENTIALS_REFUSED} ({name})")
        } else {
            format!("{CREDENTIALS_REFUSED} ({name}: {message})")
        };
    }
    if message.is_empty() {
        return match exception {
            Some(e) => format!("Bedrock {}", exception_name(e)),
            None => "Bedrock returned an error without a message".to_owned(),
        };
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: u16, error_type: &str) {
        for (variant, bedrock_status) in [
            (name.to_owned(), 400),
            (
                format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
                400,
            ),
            (format!("com.amazon.bedrock#{name}"), 400),
            (
                {
                    let mut c = name.chars();
                    c.next()
                        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
                        .unwrap_or_default()
                },
                400,
            ),
        ] {
            let m = classify(Some(&variant), StatusCode::from_u16(bedrock_status).unwrap());
            assert_eq!((m.status, m.error_type), (status, error_type), "{variant}");
        }
    }

    #[test]
    fn validation_is_400_with_the_message_verbatim() {
        check("ValidationException", 400, "invalid_request_error");
        let m = classify(Some("ValidationException"), StatusCode::BAD_REQUEST);
        let text = "prompt is too long: 250000 tokens > 200000 maximum";
        assert_eq!(client_message(&m, Some("ValidationException"), text), text);
    }

    #[test]
    fn access_denied_is_403_permission_error() {
        check("AccessDeniedException", 403, "permission_error");
    }

    #[test]
    fn resource_not_found_is_404() {
        check("ResourceNotFoundException", 404, "not_found_error");
    }

    #[test]
    fn throttling_is_429() {
        check("ThrottlingException", 429, "rate_limit_error");
    }

    #[test]
    fn service_quota_exceeded_is_429() {
        check("ServiceQuotaExceededException", 429, "rate_limit_error");
    }

    #[test]
    fn model_not_ready_is_529() {
        check("ModelNotReadyException", 529, "overloaded_error");
    }

    #[test]
    fn service_unavailable_is_529() {
        check("ServiceUnavailableException", 529, "overloaded_error");
    }

    #[test]
    fn internal_server_is_500() {
        check("InternalServerException", 500, "api_error");
    }

    #[test]
    fn model_timeout_is_504_timeout_error() {
        check("ModelTimeoutException", 504, "timeout_error");
    }

    #[test]
    fn model_error_is_500() {
        check("ModelErrorException", 500, "api_error");
        check("ModelStreamErrorException", 500, "api_error");
    }

    #[test]
    fn refused_credentials_are_502_never_401() {
        for name in [
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "ExpiredTokenException",
            "IncompleteSignatureException",
            "MissingAuthenticationTokenException",
        ] {
            check(name, 502, "api_error");
            let m = classify(Some(name), StatusCode::FORBIDDEN);
            assert!(
                client_message(&m, Some(name), "The security token is invalid.")
                    .starts_with(CREDENTIALS_REFUSED)
            );
        }
        let untyped = classify(None, StatusCode::FORBIDDEN);
        assert_eq!((untyped.status, untyped.error_type), (502, "api_error"));
        assert_eq!(
            client_message(&untyped, None, ""),
            format!("{CREDENTIALS_REFUSED} (HTTP 403)")
        );
        assert!(TABLE.iter().all(|m| m.status != 401));
    }

    #[test]
    fn untyped_errors_fall_back_on_the_status() {
        for (status, want) in [
            (400, (400, "invalid_request_error")),
            (404, (404, "not_found_error")),
            (408, (504, "timeout_error")),
            (413, (413, "request_too_large")),
            (424, (500, "api_error")),
            (429, (429, "rate_limit_error")),
            (503, (529, "overloaded_error")),
            (409, (409, "invalid_request_error")),
            (500, (500, "api_error")),
            (502, (500, "api_error")),
        ] {
            let m = classify(
                Some("SomethingNewException"),
                StatusCode::from_u16(status).unwrap(),
            );
            assert_eq!((m.status, m.error_type), want, "{status}");
        }
    }
}
