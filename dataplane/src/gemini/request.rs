//! What a Gemini API request asks for: the call its path names, the key it presents, and
//! what its body says about its size.
//!
//! **Paths.** `POST /gemini/v1beta/models/{model}:{method}` (and the same without the
//! `/gemini` prefix), where `{method}` is `generateContent`, `streamGenerateContent` or
//! `countTokens` (<https://ai.google.dev/api/generate-content>,
//! <https://ai.google.dev/api/tokens>). The API's resource name is `models/{model}`: the SDKs
//! add the `models/` prefix unless the model already has it, so the path always holds it
//! exactly once and `{model}` is one path segment. It is percent-decoded; a model that
//! decodes to something with a `/`, a control character, invalid UTF-8 or more than
//! [`MAX_MODEL_BYTES`] bytes names no model (`None`: a 404). Other versions (`v1`,
//! `v1alpha`), tuned models and other methods are not served.
//!
//! **Keys.** The client's virtual key is `x-goog-api-key` (what the SDKs and Gemini CLI
//! send) or the `key` query parameter (<https://ai.google.dev/api#authentication>). The
//! query keeps the key out of nothing by itself: [`query_without_key`] is the only form of
//! the query that may be logged or forwarded.
//!
//! **Bodies.** [`inspect`] reads only `generationConfig.maxOutputTokens` and
//! `generationConfig.candidateCount`, in either proto3 JSON spelling, as Google reads them
//! (a number or a string of one); a field given twice is refused.

use http::HeaderMap;
use serde_json::value::RawValue;

use super::json::{Members, count};
use crate::denial::Denial;

/// Longest model id accepted, in bytes (decoded).
pub const MAX_MODEL_BYTES: usize = 256;

/// The path prefix the gateway serves the Gemini API under.
pub const PATH_PREFIX: &str = "/gemini";

/// The header the Gemini API takes its key in.
pub const KEY_HEADER: &str = "x-goog-api-key";

/// The Gemini API call a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `:generateContent`: one JSON `GenerateContentResponse`.
    Generate,
    /// `:streamGenerateContent` (`?alt=sse`): an SSE stream of `GenerateContentResponse`s.
    StreamGenerate,
    /// `:countTokens`: `{"totalTokens": n}`; nothing is generated or billed.
    CountTokens,
}

impl Method {
    /// Every method, for tables and tests.
    pub const ALL: [Method; 3] = [Method::Generate, Method::StreamGenerate, Method::CountTokens];

    /// The method's name in the path (the part after `:`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Generate => "generateContent",
            Method::StreamGenerate => "streamGenerateContent",
            Method::CountTokens => "countTokens",
        }
    }

    /// The method of a path's custom verb (case-sensitive, as Google's router is).
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the answer is an SSE stream.
    pub fn is_stream(self) -> bool {
        self == Method::StreamGenerate
    }

    /// Whether the call generates (and is billed).
    pub fn generates(self) -> bool {
        self != Method::CountTokens
    }
}

/// The model and method a request path names, or `None` when it names no Gemini call the
/// gateway serves (see the module docs). `path` is the path only, without the query.
pub fn parse_path(path: &str) -> Option<(String, Method)> {
    let path = path.strip_prefix(PATH_PREFIX).unwrap_or(path);
    let rest = path.strip_prefix("/v1beta/models/")?;
    // Google's custom verb follows the last `:` of the path.
    let (segment, verb) = rest.rsplit_once(':')?;
    let method = Method::from_name(verb)?;
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    let model = percent_decode(segment)?;
    let valid = !model.is_empty()
        && model.len() <= MAX_MODEL_BYTES
        && !model.contains('/')
        && !model.chars().any(char::is_control);
    valid.then_some((model, method))
}

/// `%XX` escapes decoded; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The virtual key the client presents: `x-goog-api-key`, else the `key` query parameter.
/// `Ok(None)` when there is none; [`Denial::ConflictingKeys`] when the places (or repeated
/// headers or parameters) carry different keys, so the gateway never picks one of two.
pub fn presented_key(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, Denial> {
    let from_headers = headers
        .get_all(KEY_HEADER)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
    let from_query = query
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .filter(|(name, _)| name == "key")
        .map(|(_, value)| value.trim().to_owned());
    let mut key: Option<String> = None;
    for candidate in from_headers.chain(from_query).filter(|k| !k.is_empty()) {
        match &key {
            Some(k) if *k != candidate => return Err(Denial::ConflictingKeys),
            Some(_) => {}
            None => key = Some(candidate),
        }
    }
    Ok(key)
}

/// The query without any `key` parameter (however it is encoded: `%6Bey` is `key` too),
/// every other parameter byte for byte (`alt=sse` kept); `None` when nothing is left. This
/// is the only form of the client's query to log or forward.
pub fn query_without_key(query: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            url::form_urlencoded::parse(name.as_bytes())
                .next()
                .is_none_or(|(decoded, _)| decoded != "key")
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// What a request body says about the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// `generationConfig.maxOutputTokens`: the most output tokens of each candidate, when
    /// the request limits it.
    pub max_tokens: Option<u64>,
    /// Whether the answer is a stream (the method says; the body has no `stream` field).
    pub stream: bool,
    /// `generationConfig.candidateCount` (1 when absent or 0): each candidate is billed.
    pub candidate_count: u64,
}

impl Info {
    /// The most output tokens the whole answer can bill: the request's limit (else
    /// `model_max`, the model's own) for each candidate; `None` when neither is known.
    pub fn output_bound(&self, model_max: Option<u64>) -> Option<u64> {
        self.max_tokens
            .or(model_max)
            .map(|per_candidate| per_candidate.saturating_mul(self.candidate_count))
    }
}

/// Reads a request body for `method`; the error is a 400 message naming the field.
pub fn inspect(method: Method, body: &[u8]) -> Result<Info, String> {
    let top: Members<'_> =
        serde_json::from_slice(body).map_err(|e| format!("body is not a valid JSON object: {e}"))?;
    let mut info = Info {
        max_tokens: None,
        stream: method.is_stream(),
        candidate_count: 1,
    };
    if !method.generates() {
        return Ok(info);
    }
    let Some(config) = top.get("generationConfig", "")? else {
        return Ok(info);
    };
    let config = Members::of(config, "generationConfig")?;
    if let Some(raw) = config.get("maxOutputTokens", "generationConfig.")? {
        info.max_tokens = Some(int32(raw, "generationConfig.maxOutputTokens")?);
    }
    if let Some(raw) = config.get("candidateCount", "generationConfig.")? {
        info.candidate_count = int32(raw, "generationConfig.candidateCount")?.max(1);
    }
    Ok(info)
}

/// A non-negative proto3 `int32` field.
fn int32(raw: &RawValue, field: &str) -> Result<u64, String> {
    count(raw)
        .filter(|n| *n <= i32::MAX as u64)
        .ok_or_else(|| format!("{field}: must be an integer from 0 to {}", i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_and_without_the_prefix() {
        let m = |p: &str| parse_path(p);
        assert_eq!(
            m("/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent"),
            Some(("gemini-2.5-pro".into(), Method::StreamGenerate))
        );
        assert_eq!(
            m("/v1beta/models/gemini-2.5-flash:generateContent"),
            Some(("gemini-2.5-flash".into(), Method::Generate))
        );
        assert_eq!(
            m("/gemini/v1beta/models/gemini-2.5-flash-lite:countTokens"),
            Some(("gemini-2.5-flash-lite".into(), Method::CountTokens))
        );
        // Percent-decoded; the custom verb is after the last colon.
        assert_eq!(
            m("/v1beta/models/gemini%2D3%3Apreview:generateContent"),
            Some(("gemini-3:preview".into(), Method::Generate))
        );
        assert_eq!(
            m("/v1beta/models/a:b:countTokens"),
            Some(("a:b".into(), Method::CountTokens))
        );
    }

    #[test]
    fn paths_that_name_no_served_call() {
        let long = format!(
            "/v1beta/models/{}:generateContent",
            "m".repeat(MAX_MODEL_BYTES + 1)
        );
        let max = format!("/v1beta/models/{}:generateContent", "m".repeat(MAX_MODEL_BYTES));
        assert!(parse_path(&max).is_some());
        for p in [
            long.as_str(),
            "/v1beta/models/gemini-2.5-pro",
            "/v1beta/models/gemini-2.5-pro:GenerateContent",
            "/v1beta/models/gemini-2.5-pro:embedContent",
            "/v1beta/models/:generateContent",
            "/v1beta/models/models/gemini-2.5-pro:generateContent",
            "/v1beta/models/models%2Fgemini-2.5-pro:generateContent",
            "/v1beta/models/a%0Ab:generateContent",
            "/v1beta/models/a%zz:generateContent",
            "/v1beta/models/a%C3:generateContent",
            "/v1beta/models/a%:generateContent",
            "/v1beta/models/a%+4:generateContent",
            "/v1/models/gemini-2.5-pro:generateContent",
            "/v1beta/tunedModels/x:generateContent",
            "/gemini/gemini/v1beta/models/m:generateContent",
            "/geminiv1beta/models/m:generateContent",
            "/v1beta/models/m:generateContent/",
            "",
        ] {
            assert_eq!(parse_path(p), None, "{p}");
        }
    }

    #[test]
    fn methods_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(m));
        }
        assert!(Method::StreamGenerate.is_stream() && !Method::Generate.is_stream());
        assert!(!Method::CountTokens.generates());
    }

    fn headers(keys: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for k in keys {
            h.append(KEY_HEADER, k.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_key_is_the_header_else_the_query() {
        assert_eq!(
            presented_key(&headers(&["vk-1"]), None).unwrap().as_deref(),
            Some("vk-1")
        );
        assert_eq!(
            presented_key(&HeaderMap::new(), Some("alt=sse&key=vk-2"))
                .unwrap()
                .as_deref(),
            Some("vk-2")
        );
        assert_eq!(
            presented_key(&HeaderMap::new(), Some("%6Bey=vk%2D3"))
                .unwrap()
                .as_deref(),
            Some("vk-3")
        );
        // The same key in both places is one key.
        assert_eq!(
            presented_key(&headers(&["vk-1", "vk-1"]), Some("key=vk-1"))
                .unwrap()
                .as_deref(),
            Some("vk-1")
        );
        assert_eq!(presented_key(&HeaderMap::new(), Some("alt=sse")).unwrap(), None);
        assert_eq!(presented_key(&headers(&[""]), Some("key=")).unwrap(), None);
        assert_eq!(presented_key(&HeaderMap::new(), None).unwrap(), None);
    }

    #[test]
    fn different_keys_conflict() {
        for (h, q) in [
            (vec!["vk-1", "vk-2"], None),
            (vec!["vk-1"], Some("key=vk-2")),
            (vec![], Some("key=vk-1&key=vk-2")),
        ] {
            assert_eq!(
                presented_key(&headers(&h), q),
                Err(Denial::ConflictingKeys),
                "{h:?} {q:?}"
            );
        }
    }

    #[test]
    fn the_query_loses_every_key() {
        assert_eq!(
            query_without_key(Some("alt=sse&key=vk-secret")).as_deref(),
            Some("alt=sse")
        );
        assert_eq!(
            query_without_key(Some("key=vk-secret&alt=sse")).as_deref(),
            Some("alt=sse")
        );
        assert_eq!(
            query_without_key(Some("key=a&%6Bey=b&k%65y&alt=sse&keys=x&&")).as_deref(),
            Some("alt=sse&keys=x")
        );
        assert_eq!(query_without_key(Some("key=vk-secret")), None);
        assert_eq!(query_without_key(Some("")), None);
        assert_eq!(query_without_key(None), None);
    }

    #[test]
    fn inspect_reads_the_output_limit_in_both_spellings() {
        let i = inspect(
            Method::StreamGenerate,
            br#"{"contents":[],"generationConfig":{"maxOutputTokens":8192,"temperature":1}}"#,
        )
        .unwrap();
        assert_eq!(
            i,
            Info {
                max_tokens: Some(8192),
                stream: true,
                candidate_count: 1
            }
        );
        let i = inspect(
            Method::Generate,
            br#"{"generation_config":{"max_output_tokens":"100","candidate_count":3}}"#,
        )
        .unwrap();
        assert_eq!((i.max_tokens, i.stream, i.candidate_count), (Some(100), false, 3));
        assert_eq!(i.output_bound(None), Some(300));
        let none = inspect(Method::Generate, br#"{"contents":[],"generationConfig":null}"#).unwrap();
        assert_eq!((none.max_tokens, none.candidate_count), (None, 1));
        assert_eq!(none.output_bound(Some(65_536)), Some(65_536));
        assert_eq!(none.output_bound(None), None);
        let zero = inspect(Method::Generate, br#"{"generationConfig":{"candidateCount":0}}"#).unwrap();
        assert_eq!(zero.candidate_count, 1);
        // countTokens generates nothing: its generationConfig is not read.
        let c = inspect(
            Method::CountTokens,
            br#"{"generateContentRequest":{"generationConfig":{"maxOutputTokens":-1}}}"#,
        )
        .unwrap();
        assert_eq!(c.max_tokens, None);
    }

    #[test]
    fn inspect_errors_name_the_field() {
        for (body, field) in [
            (&b"[1]"[..], "not a valid JSON object"),
            (b"{nope", "not a valid JSON object"),
            (b"", "not a valid JSON object"),
            (
                br#"{"generationConfig":[]}"#,
                "generationConfig: must be an object",
            ),
            (
                br#"{"generationConfig":{"maxOutputTokens":-5}}"#,
                "generationConfig.maxOutputTokens: must be an integer",
            ),
            (
                br#"{"generationConfig":{"maxOutputTokens":2147483648}}"#,
                "generationConfig.maxOutputTokens: must be an integer",
            ),
            (
                br#"{"generationConfig":{"maxOutputTokens":"lots"}}"#,
                "generationConfig.maxOutputTokens",
            ),
            (
                br#"{"generationConfig":{"candidateCount":1.5}}"#,
                "generationConfig.candidateCount",
            ),
            (
                br#"{"generationConfig":{"maxOutputTokens":1,"max_output_tokens":99999}}"#,
                "generationConfig.maxOutputTokens: given more than once",
            ),
            (
                br#"{"generationConfig":{},"generation_config":{"maxOutputTokens":1}}"#,
                "generationConfig: given more than once",
            ),
        ] {
            let err = inspect(Method::Generate, body).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }
}
