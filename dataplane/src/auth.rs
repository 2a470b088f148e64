//! Virtual key authentication: the presented key is hashed with SHA-256 and looked up; the
//! policy holds only hashes, so no key comparison ever touches a stored secret.

use std::sync::Arc;

use http::HeaderMap;

use crate::denial::Denial;
use crate::policy::{KeyEntry, Snapshot};

/// The keys a client presented: `Authorization: Bearer` first, then `x-api-key` (Claude Code
/// sends both when both ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY are set).
pub fn presented_keys(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    bearer.into_iter().chain(api_key).filter(|k| !k.is_empty())
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
    let mut presented = false;
    let key = presented_keys(headers)
        .inspect(|_| presented = true)
        .find_map(|k| snapshot.key(k))
        .cloned();
    let Some(key) = key else {
        return Err(if presented {
            Denial::UnknownKey
        } else {
            Denial::MissingKey
        });
    };
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
        h.insert("authorization", "Bearer vk-unknown".parse().unwrap());
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
            auth(&[("authorization", "Bearer stale"), ("x-api-key", "vk-alice")]),
            Ok("alice".into()),
            "either presented key may match"
        );
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
