//! AWS Signature Version 4, as botocore computes it for services other than S3: a pure
//! function of the request, the credentials and the time.
//!
//! The canonical URI is the request path (already percent-encoded as sent) with dot segments
//! removed, percent-encoded once more (everything but unreserved characters and `/`); the query
//! is sorted; headers are lowercased, trimmed with inner whitespace collapsed, sorted, repeated
//! names joined with `,`; the payload hash is the hex SHA-256 of the body.

use ring::hmac;
use sha2::{Digest, Sha256};

/// The algorithm name in the string to sign and the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What is signed.
#[derive(Debug, Clone)]
pub struct SigningInput<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent on the wire (percent-encoded).
    pub path: &'a str,
    /// The query as sent on the wire, without `?` (empty when none).
    pub query: &'a str,
    /// Every header to sign (including `host` and `x-amz-date`), any case.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub payload: &'a [u8],
    /// e.g. `us-east-1`.
    pub region: &'a str,
    /// e.g. `bedrock`.
    pub service: &'a str,
    /// `x-amz-date`: `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
}

/// The hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Python's `quote(s, safe='/~')`: unreserved characters and `/` stay, the rest is `%XX`.
fn quote_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 3986 dot-segment removal as botocore does it (empty segments go too; a trailing
/// slash stays).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut joined = format!("/{}", out.join("/"));
    if path.ends_with('/') && joined != "/" {
        joined.push('/');
    }
    joined
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The sorted, lowercased header names and the canonical headers block.
fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut lowered: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    // Stable: repeated names keep their order when joined.
    lowered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut block = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in &lowered {
        if names.last() == Some(&name.as_str()) {
            block.pop();
            block.push(',');
        } else {
            names.push(name);
            block.push_str(name);
            block.push(':');
        }
        block.push_str(value);
        block.push('\n');
    }
    (names.join(";"), block)
}

/// The canonical request and the signed-headers list.
pub fn canonical_request(input: &SigningInput<'_>) -> (String, String) {
    let (signed, block) = canonical_headers(input.headers);
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        quote_path(&remove_dot_segments(input.path)),
        canonical_query(input.query),
        block,
        signed,
        sha256_hex(input.payload),
    );
    (canonical, signed)
}

fn scope(input: &SigningInput<'_>) -> String {
    let date = input.amz_date.get(..8).unwrap_or(input.amz_date);
    format!("{date}/{}/{}/aws4_request", input.region, input.service)
}

/// The string to sign for a canonical request.
pub fn string_to_sign(input: &SigningInput<'_>, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        input.amz_date,
        scope(input),
        sha256_hex(canonical.as_bytes())
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

/// The hex signature of `string_to_sign` with the key derived from `secret_access_key`.
pub fn signature(input: &SigningInput<'_>, secret_access_key: &str, string_to_sign: &str) -> String {
    let date = input.amz_date.get(..8).unwrap_or(input.amz_date);
    let k_date = hmac_sha256(format!("AWS4{secret_access_key}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(k_date.as_ref(), input.region.as_bytes());
    let k_service = hmac_sha256(k_region.as_ref(), input.service.as_bytes());
    let k_signing = hmac_sha256(k_service.as_ref(), b"aws4_request");
    hex::encode(hmac_sha256(k_signing.as_ref(), string_to_sign.as_bytes()))
}

/// The `Authorization` header value for `input`.
pub fn authorization(input: &SigningInput<'_>, access_key_id: &str, secret_access_key: &str) -> String {
    let (canonical, signed) = canonical_request(input);
    let sts = string_to_sign(input, &canonical);
    let sig = signature(input, secret_access_key, &sts);
    format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={signed}, Signature={sig}",
        scope(input)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The AWS SigV4 test suite's credentials, date, region and service.
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn suite<'a>(
        method: &'a str,
        path: &'a str,
        headers: &'a [(&'a str, &'a str)],
        body: &'a [u8],
    ) -> SigningInput<'a> {
        SigningInput {
            method,
            path,
            query: "",
            headers,
            payload: body,
            region: "us-east-1",
            service: "service",
            amz_date: DATE,
        }
    }

    #[test]
    fn aws_suite_get_vanilla() {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];
        let input = suite("GET", "/", &headers, b"");
        let (canonical, _) = canonical_request(&input);
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            authorization(&input, AKID, SECRET),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn aws_suite_post_x_www_form_urlencoded() {
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", DATE),
        ];
        let input = suite("POST", "/", &headers, b"Param1=value1");
        let (canonical, _) = canonical_request(&input);
        assert_eq!(
            canonical,
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        assert_eq!(
            string_to_sign(&input, &canonical),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"
        );
        assert!(authorization(&input, AKID, SECRET).ends_with(
            "SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        ));
    }

    #[test]
    fn aws_suite_header_rules_utf8_path_and_query_order() {
        // get-header-key-duplicate: repeated names joined in order.
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("My-Header1", "value2"),
            ("My-Header1", "value2"),
            ("My-Header1", "value1"),
            ("X-Amz-Date", DATE),
        ];
        let (canonical, signed) = canonical_request(&suite("GET", "/", &headers, b""));
        assert!(
            canonical.contains("\nmy-header1:value2,value2,value1\n"),
            "{canonical}"
        );
        assert_eq!(signed, "host;my-header1;x-amz-date");
        // get-header-value-trim: leading/trailing whitespace trimmed, inner runs collapsed.
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("My-Header1", " value1"),
            ("My-Header2", " \"a   b   c\""),
            ("X-Amz-Date", DATE),
        ];
        let (canonical, _) = canonical_request(&suite("GET", "/", &headers, b""));
        assert!(
            canonical.contains("\nmy-header1:value1\nmy-header2:\"a b c\"\n"),
            "{canonical}"
        );
        // get-utf8 (the path as sent is encoded; botocore encodes it again).
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];
        let (canonical, _) = canonical_request(&suite("GET", "/%E1%88%B4", &headers, b""));
        assert!(canonical.starts_with("GET\n/%25E1%2588%25B4\n"), "{canonical}");
        // get-vanilla-query-order-key-case.
        let mut input = suite("GET", "/", &headers, b"");
        input.query = "Param2=value2&Param1=value1";
        let (canonical, _) = canonical_request(&input);
        assert!(canonical.starts_with("GET\n/\nParam1=value1&Param2=value2\n"));
        assert!(
            authorization(&input, AKID, SECRET)
                .ends_with("Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
        );
        // Dot segments and repeated slashes are normalized before encoding.
        assert_eq!(remove_dot_segments("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(remove_dot_segments(""), "/");
    }

    #[test]
    fn a_bedrock_model_path_is_encoded_twice() {
        let headers = [
            ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
            ("x-amz-date", DATE),
        ];
        let input = SigningInput {
            method: "POST",
            path: "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
            query: "",
            headers: &headers,
            payload: b"{}",
            region: "us-east-1",
            service: "bedrock",
            amz_date: DATE,
        };
        let (canonical, _) = canonical_request(&input);
        assert!(
            canonical.starts_with("POST\n/model/us.anthropic.claude-sonnet-4-5-20250929-v1%253A0/invoke\n")
        );
        assert!(authorization(&input, AKID, SECRET).contains("/20150830/us-east-1/bedrock/aws4_request"));
    }
}
