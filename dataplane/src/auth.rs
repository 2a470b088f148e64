//! Virtual key authentication: the presented key is hashed with SHA-256 and looked up; the
//! policy holds only hashes, so no key comparison ever touches a stored secret.
//!
//! A client presents one key, in `Authorization: Bearer` or `x-api-key`, or the same key in
//! both (Claude Code sends an `apiKeyHelper` value in both). Two different keys are refused
//! (401) rather than trying each: which key a request is charged to must not depend on
//! which header a hop reads first.

use std::sync::Arc;

use http::HeaderMap;

use crate::denial::Denial;
use crate::policy::{KeyEntry, Snapshot};

/// The keys a client presented: every `Authorization: Bearer` value, then every `x-api-key`
/// (Claude Code sends both when both ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY are set).
pub fn presented_keys(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let bearer = headers
        .get_all(http::header::AUTHORIZATION)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    // `x-api-key` (Anthropic) and `x-goog-api-key` (Gemini; the `key` query parameter is
    // moved into it by the server before authentication).
    let api_key = headers
        .get_all("x-api-key")
        .into_iter()
        .chain(headers.get_all("x-goog-api-key"))
        .filter_map(|v| v.to_str().ok())
        .map(str::trim);
    bearer.chain(api_key).filter(|k| !k.is_empty())
}

/// The presented key that authenticated as `key`: the one credential a sidecar forwards to
/// the gateway, so both hops judge the same key whatever else the client sent.
pub fn presented_key_of<'h>(snapshot: &Snapshot, headers: &'h HeaderMap, key: &KeyEntry) -> Option<&'h str> {
    presented_keys(headers).find(|k| snapshot.key(k).is_some_and(|found| found.id == key.id))
}

/// Finds the key and checks that it is usable at `now`.
pub fn authenticate(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    now: jiff::Timestamp,
) -> Result<Arc<KeyEntry>, Denial> {
    let mut keys = presented_keys(headers);
    let Some(presented) = keys.next() else {
        return Err(Denial::MissingKey);
    };
    if keys.any(|k| k != presented) {
        return Err(Denial::ConflictingKeys);
    }
    let key = snapshot.key(presented).cloned().ok_or(Denial::UnknownKey)?;
    if !key.enabled {
        return Err(Denial::DisabledKey { key: key.id.clone() });
    }
    if let Some(at) = key.expires_at {
        if at <= now {
            return Err(Denial::ExpiredKey {
                key: key.id.clone(),
                at: at.to_string(),
            });
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::{PolicyDocument, VirtualKey};
    use crate::policy::load::LoadedDocument;
    use crate::policy::{SystemCredentials, hash_key};
    use crate::pricing::PriceTable;

    fn snapshot() -> Snapshot {
        let key = |id: &str, secret: &str| VirtualKey {
            id: id.into(),
            sha256: hex::encode(hash_key(secret)),
            enabled: true,
            ..Default::default()
        };
        let mut disabled = key("off", "vk-off");
        disabled.enabled = false;
        let mut expired = key("old", "vk-old");
        expired.expires_at = Some("2026-01-01T00:00:00Z".parse().unwrap());
        let doc = PolicyDocument {
            version: 1,
            keys: vec![key("alice", "vk-alice"), disabled, expired],
            ..Default::default()
        };
        let loaded = LoadedDocument {
            document: doc,
            revision: "r".into(),
        };
        Snapshot::compile(loaded, &PriceTable::builtin(), &SystemCredentials).unwrap()
    }

    fn auth(pairs: &[(&'static str, &str)]) -> Result<String, Denial> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        let now: jiff::Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        authenticate(&snapshot(), &h, now).map(|k| k.id.clone())
    }

    #[test]
    fn the_presented_key_of_an_authenticated_key_is_the_one_that_matched() {
        let snap = snapshot();
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        h.insert("x-api-key", "vk-alice".parse().unwrap());
        let now: jiff::Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let key = authenticate(&snap, &h, now).unwrap();
        assert_eq!(presented_key_of(&snap, &h, &key), Some("vk-alice"));
    }

    #[test]
    fn bearer_and_x_api_key_both_work() {
        assert_eq!(auth(&[("authorization", "Bearer vk-alice")]), Ok("alice".into()));
        assert_eq!(
            auth(&[("authorization", "bearer  vk-alice ")]),
            Ok("alice".into())
        );
        assert_eq!(auth(&[("x-api-key", "vk-alice")]), Ok("alice".into()));
        assert_eq!(
            auth(&[("authorization", "Bearer vk-alice"), ("x-api-key", "vk-alice")]),
            Ok("alice".into()),
            "the same key in both headers"
        );
    }

    #[test]
    fn different_keys_in_one_request_are_refused() {
        for pairs in [
            &[("authorization", "Bearer stale"), ("x-api-key", "vk-alice")][..],
            &[("authorization", "Bearer vk-alice"), ("x-api-key", "vk-off")],
            &[("x-api-key", "vk-alice"), ("x-api-key", "vk-old")],
            &[
                ("authorization", "Bearer vk-alice"),
                ("authorization", "Bearer vk-x"),
            ],
        ] {
            assert_eq!(auth(pairs), Err(Denial::ConflictingKeys), "{pairs:?}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(auth(&[]), Err(Denial::MissingKey));
        assert_eq!(
            auth(&[("authorization", "Basic dmstYWxpY2U=")]),
            Err(Denial::MissingKey)
        );
        assert_eq!(auth(&[("authorization", "Bearer nope")]), Err(Denial::UnknownKey));
        assert_eq!(
            auth(&[("x-api-key", "vk-off")]),
            Err(Denial::DisabledKey { key: "off".into() })
        );
        assert!(matches!(
            auth(&[("x-api-key", "vk-old")]),
            Err(Denial::ExpiredKey { .. })
        ));
    }
}
