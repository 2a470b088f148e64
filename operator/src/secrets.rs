//! Virtual-key Secrets: generating keys, the Secret the operator owns for each generated key,
//! and reducing observed Secrets to SHA-256 digests before they are cached, so key values
//! never stay in the operator's memory.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::compile::SecretDigest;
use crate::crd::VirtualKey;
use crate::crd::common::DEFAULT_SECRET_KEY;

/// Label every virtual-key Secret carries (the operator only watches Secrets with it); on a
/// generated Secret its value is the VirtualKey's name, or a hash of a name too long or odd
/// for a label value (see [`crate::names::label_value`]).
pub const KEY_LABEL: &str = "tollgate.dev/virtual-key";
/// Annotation on a generated Secret holding the VirtualKey's full name.
pub const KEY_NAME_ANNOTATION: &str = "tollgate.dev/virtual-key-name";
/// The standard label naming the tool that manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// This operator's name: the `managed-by` value and the server-side apply field manager.
pub const MANAGER: &str = "tollgate-operator";
/// Marks a cached Secret whose data has been replaced by digests.
const DIGESTED: &str = "tollgate.dev/digested";

/// Why a key could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// A new virtual key: `tg_` and 32 random bytes in hex (256 bits from the OS CSPRNG), the
/// same shape as `tollgate-proxy keygen`.
pub fn generate_key() -> Result<String, KeyError> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    Ok(format!("tg_{}", hex::encode(bytes)))
}

/// Lower-case hex SHA-256 of a key, as the policy stores it (surrounding whitespace trimmed,
/// like `tollgate-proxy hash-key`).
pub fn key_sha256(key: &str) -> String {
    hex::encode(tollgate_dataplane::policy::hash_key(key.trim()))
}

/// The name of the Secret generated for a VirtualKey.
pub fn generated_name(virtual_key: &str) -> String {
    format!("tollgate-vk-{virtual_key}")
}

/// The Secret holding a freshly generated key for `vk`, owned by it (so deleting the
/// VirtualKey garbage-collects the Secret). Only the operator's own labels: nothing is copied
/// from the VirtualKey, so Argo CD tracking labels never mark it as part of an Application.
pub fn generated_secret(vk: &VirtualKey, key: &str) -> Secret {
    let owner = OwnerReference {
        api_version: VirtualKey::api_version(&()).into_owned(),
        kind: VirtualKey::kind(&()).into_owned(),
        name: vk.name_any(),
        uid: vk.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(generated_name(&vk.name_any())),
            namespace: vk.namespace(),
            labels: Some(BTreeMap::from([
                (KEY_LABEL.to_owned(), crate::names::label_value(&vk.name_any())),
                (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(KEY_NAME_ANNOTATION.to_owned(), vk.name_any())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            DEFAULT_SECRET_KEY.to_owned(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// Replaces a Secret's values by their SHA-256 digests (and drops annotations and managed
/// fields, where `kubectl apply` may have left a copy of the value). Run on every watched
/// Secret before it is cached, always: whatever annotations the object carries (a tenant can
/// set any), its data is digested here.
pub fn digest_in_place(secret: &mut Secret) {
    let mut digests = BTreeMap::new();
    let data = secret.data.take().unwrap_or_default();
    for (k, v) in data {
        let digest = match std::str::from_utf8(&v.0) {
            Ok(s) if !s.trim().is_empty() => key_sha256(s),
            _ => String::new(),
        };
        digests.insert(k, ByteString(digest.into_bytes()));
    }
    for (k, v) in secret.string_data.take().unwrap_or_default() {
        let digest = if v.trim().is_empty() {
            String::new()
        } else {
            key_sha256(&v)
        };
        digests.insert(k, ByteString(digest.into_bytes()));
    }
    secret.data = Some(digests);
    secret.metadata.managed_fields = None;
    secret.metadata.annotations = Some(BTreeMap::from([(DIGESTED.to_owned(), "true".to_owned())]));
}

/// Annotation the cache puts on a VirtualKey whose spec was too large to keep: its size in
/// bytes. The compiler refuses such a key (`KeyTooLarge`) without the cache holding its spec.
pub const OVERSIZED_ANNOTATION: &str = "tollgate.dev/oversized-spec-bytes";

/// The largest VirtualKey spec the cache keeps whole; twice what a key may compile to.
pub const MAX_CACHED_SPEC_BYTES: usize = 64 * 1024;

/// Trims a VirtualKey before it is cached: no managed fields or annotations, and a spec too
/// large to compile replaced by its identity and size, so a tenant writing many maximal keys
/// cannot exhaust the operator's memory.
pub fn trim_virtual_key(vk: &mut VirtualKey) {
    vk.metadata.managed_fields = None;
    vk.metadata.annotations = None;
    let bytes = serde_json::to_vec(&vk.spec).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_CACHED_SPEC_BYTES {
        let spec = &vk.spec;
        vk.spec = crate::crd::VirtualKeySpec {
            owner: spec.owner.clone(),
            team: spec.team.clone(),
            enabled: spec.enabled,
            secret_ref: spec.secret_ref.clone(),
            ..Default::default()
        };
        vk.metadata.annotations = Some(BTreeMap::from([(
            OVERSIZED_ANNOTATION.to_owned(),
            bytes.to_string(),
        )]));
    }
}

/// What the compiler needs from a Secret as read from the API (its values still in it).
pub fn digest_of(secret: &Secret) -> SecretDigest {
    let mut copy = secret.clone();
    digest_in_place(&mut copy);
    cached_digest(&copy)
}

/// What the compiler needs from a cached Secret, already digested by [`digest_in_place`]. A
/// value that is not a lower-case hex SHA-256 counts as unusable, never as a hash.
pub fn cached_digest(secret: &Secret) -> SecretDigest {
    SecretDigest {
        digests: secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| {
                let hex = String::from_utf8(v.0.clone()).unwrap_or_default();
                (k.clone(), is_sha256_hex(&hex).then_some(hex))
            })
            .collect(),
        owner_uids: secret.owner_references().iter().map(|o| o.uid.clone()).collect(),
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_look_like_keygen_output() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("tg_") && a.len() == 67, "{a}");
        assert!(a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(key_sha256(&a).len(), 64);
    }

    /// Every name, label and annotation the operator writes on a generated Secret is valid for
    /// its field, whatever VirtualKey name the CRD admits (up to 200 characters, DNS-1123).
    #[test]
    fn generated_secrets_are_valid_objects_for_long_and_odd_names() {
        use crate::names::{is_dns1123_subdomain, is_label_value, is_qualified_name};
        let names = [
            "a".to_owned(),
            "a".repeat(63),
            "a".repeat(64),
            "a".repeat(200),
            format!("{}.{}", "x".repeat(100), "y-z.".repeat(24) + "q"),
            "1.2.3".to_owned(),
        ];
        for name in names {
            let mut vk = VirtualKey::new(&name, Default::default());
            vk.metadata.namespace = Some("team-a".into());
            vk.metadata.uid = Some("uid".into());
            let s = generated_secret(&vk, "tg_x");
            let meta = &s.metadata;
            assert!(
                is_dns1123_subdomain(meta.name.as_deref().unwrap_or_default()),
                "{name}"
            );
            for (k, v) in meta.labels.iter().flatten() {
                assert!(is_qualified_name(k) && is_label_value(v), "{name}: label {k}={v}");
            }
            for k in meta.annotations.iter().flatten().map(|(k, _)| k) {
                assert!(is_qualified_name(k), "{name}: annotation {k}");
            }
            assert_eq!(meta.annotations.as_ref().unwrap()[KEY_NAME_ANNOTATION], name);
        }
    }

    #[test]
    fn an_oversized_key_is_cached_as_its_identity_and_size() {
        let mut vk = VirtualKey::new("big", Default::default());
        vk.spec.owner = Some("alice".into());
        vk.spec.models.allow = (0..400).map(|i| format!("{i}-{}", "m".repeat(250))).collect();
        vk.metadata.annotations = Some(BTreeMap::from([(
            "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
            "x".repeat(100_000),
        )]));
        trim_virtual_key(&mut vk);
        assert!(vk.spec.models.allow.is_empty());
        assert_eq!(vk.spec.owner.as_deref(), Some("alice"));
        let size: usize = vk.metadata.annotations.as_ref().unwrap()[OVERSIZED_ANNOTATION]
            .parse()
            .unwrap();
        assert!(size > MAX_CACHED_SPEC_BYTES);
        assert!(
            serde_json::to_vec(&vk).unwrap().len() < 1024,
            "the cached copy is small"
        );
        // A normal key keeps its spec, without annotations.
        let mut small = VirtualKey::new("small", Default::default());
        small.spec.models.allow = vec!["claude-*".into()];
        trim_virtual_key(&mut small);
        assert_eq!(small.spec.models.allow, ["claude-*"]);
        assert!(small.metadata.annotations.is_none());
    }

    #[test]
    fn digesting_removes_values_and_last_applied_copies() {
        let mut s = Secret {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    "{\"stringData\":{\"key\":\"tg_secret\"}}".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("key".to_owned(), ByteString(b"tg_secret\n".to_vec())),
                ("empty".to_owned(), ByteString(b"  ".to_vec())),
            ])),
            ..Default::default()
        };
        let original = s.clone();
        digest_in_place(&mut s);
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("tg_secret"), "{text}");
        let d = cached_digest(&s);
        assert_eq!(d.digests["key"], Some(key_sha256("tg_secret")));
        assert_eq!(d.digests["empty"], None);
        // Digesting a Secret as read gives what the cache's copy gives.
        assert_eq!(digest_of(&original), d);
    }

    /// A tenant's own `tollgate.dev/digested` annotation does not stop digesting: the raw
    /// value never passes for a hash (it could name another tenant's key hash, or break the
    /// compile of every key with a malformed one).
    #[test]
    fn a_forged_digested_annotation_changes_nothing() {
        let victim = key_sha256("tg_victim");
        let mut s = Secret {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(DIGESTED.to_owned(), "true".to_owned())])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("key".to_owned(), ByteString(victim.clone().into_bytes())),
                ("bad".to_owned(), ByteString(b"not-a-hash".to_vec())),
            ])),
            ..Default::default()
        };
        digest_in_place(&mut s);
        let d = cached_digest(&s);
        assert_eq!(
            d.digests["key"],
            Some(key_sha256(&victim)),
            "hashed like any value"
        );
        assert_ne!(d.digests["key"], Some(victim));
        assert_eq!(d.digests["bad"], Some(key_sha256("not-a-hash")));
        // And a cached value that is not a SHA-256 is unusable, not a hash.
        let mut raw = s.clone();
        raw.data = Some(BTreeMap::from([("key".to_owned(), ByteString(b"xyz".to_vec()))]));
        assert_eq!(cached_digest(&raw).digests["key"], None);
    }
}
