//! The credentials Secret: one Secret (`tollgate-credentials` by default) holding every
//! Secret key the policy references, as `<secret>_<key>`, so a proxy mounts a single Secret
//! and new providers appear in running pods without changing them. The operator assembles it
//! in the policy namespace and mirrors it into every injection namespace. Secret names cannot
//! contain `_`, so the flat name is unambiguous.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::compile::World;
use crate::crd::CredentialRef;

/// Label a Secret in the release namespace must carry, with the value `true`, before a
/// ModelProvider, McpServer or AuditSink may reference it. Without it, any credential
/// reference could name any Secret there (the webhook's CA key, the ledger password) and have
/// it copied out.
pub const CREDENTIAL_LABEL: &str = "tollgate.dev/credential";

/// Whether a Secret's labels allow it to be referenced as a credential.
pub fn is_credential(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(CREDENTIAL_LABEL))
        .is_some_and(|v| v == "true")
}

/// Why a credential reference is refused, when it is: the Secret is not among the labelled
/// ones (`allowed`, by name).
pub fn refusal(c: &CredentialRef, allowed: &BTreeSet<String>) -> Option<String> {
    let r = c.secret_key_ref.as_ref()?;
    (!allowed.contains(&r.name)).then(|| {
        format!(
            "credential Secret {:?} does not exist in the release namespace or is not labelled {CREDENTIAL_LABEL}=true; only labelled Secrets may be referenced",
            r.name
        )
    })
}

/// Annotation carrying the SHA-256 of a mirrored object's content (so unchanged content is
/// not rewritten and the cache need not hold the values).
pub const CONTENT_HASH_ANNOTATION: &str = "tollgate.dev/content-sha256";

/// The data key (and file name under the credentials directory) of `secret`'s `key`.
pub fn file_key(secret: &str, key: &str) -> String {
    format!("{secret}_{key}")
}

/// A Secret key: (Secret name, data key).
pub type SecretKey = (String, String);

/// Parses `NAME/KEY`.
pub fn parse_secret_key(s: &str) -> Option<SecretKey> {
    let (name, key) = s.split_once('/')?;
    (!name.is_empty() && !key.is_empty() && !name.contains('_')).then(|| (name.to_owned(), key.to_owned()))
}

/// Every Secret key the world's providers (their cloud credentials included), MCP servers and
/// audit sinks reference, among the
/// Secrets labelled as credentials.
pub fn referenced(world: &World) -> BTreeSet<SecretKey> {
    let refs = world
        .providers
        .iter()
        .flat_map(|p| p.spec.credential_refs())
        .chain(
            world
                .mcp_servers
                .iter()
                .filter_map(|m| m.spec.credential.as_ref()),
        )
        .chain(
            world
                .audit_sinks
                .iter()
                .flat_map(|a| a.spec.credential.iter().chain(&a.spec.access_key_id)),
        );
    refs.filter_map(|c: &CredentialRef| c.secret_key_ref.as_ref())
        .filter(|s| world.credential_secrets.contains(&s.name))
        .map(|s| (s.name.clone(), s.key.clone()))
        .collect()
}

/// The assembled Secret data and what could not be found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assembled {
    /// `<secret>_<key>` -> value.
    pub data: BTreeMap<String, Vec<u8>>,
    /// Referenced keys whose Secret or key does not exist (yet).
    pub missing: Vec<SecretKey>,
}

impl Assembled {
    /// SHA-256 (hex) over the sorted keys and values.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.data {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v);
        }
        hex::encode(h.finalize())
    }
}

/// Builds the data from the wanted keys and the source Secrets' data (by Secret name).
pub fn assemble(
    wanted: &BTreeSet<SecretKey>,
    sources: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> Assembled {
    let mut out = Assembled::default();
    for (secret, key) in wanted {
        match sources.get(secret).and_then(|d| d.get(key)) {
            Some(v) => {
                out.data.insert(file_key(secret, key), v.clone());
            }
            None => out.missing.push((secret.clone(), key.clone())),
        }
    }
    out
}

/// The namespaces that get mirrored policy objects: those whose `label` is `enabled` or
/// `opt-in` (the webhook's two modes), plus the policy namespace itself.
pub fn target_namespaces<'a>(
    labelled: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    policy_namespace: &str,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = labelled
        .into_iter()
        .filter(|(_, v)| matches!(v, Some("enabled" | "opt-in")))
        .map(|(ns, _)| ns.to_owned())
        .collect();
    out.insert(policy_namespace.to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_referenced_keys_and_reports_missing_ones() {
        let wanted: BTreeSet<SecretKey> = [
            ("anthropic".to_owned(), "api-key".to_owned()),
            ("anthropic".to_owned(), "other".to_owned()),
            ("splunk".to_owned(), "token".to_owned()),
        ]
        .into();
        let sources = BTreeMap::from([(
            "anthropic".to_owned(),
            BTreeMap::from([
                ("api-key".to_owned(), b"sk-ant-1".to_vec()),
                ("unused".to_owned(), b"never copied".to_vec()),
            ]),
        )]);
        let a = assemble(&wanted, &sources);
        assert_eq!(a.data.keys().collect::<Vec<_>>(), ["anthropic_api-key"]);
        assert_eq!(
            a.missing,
            [
                ("anthropic".into(), "other".into()),
                ("splunk".into(), "token".into())
            ]
        );
        let before = a.content_hash();
        let mut changed = a.clone();
        changed
            .data
            .insert("anthropic_api-key".into(), b"sk-ant-2".to_vec());
        assert_ne!(changed.content_hash(), before, "a rotated value changes the hash");
        // Length prefixes: moving bytes between key and value changes the hash.
        let x = Assembled {
            data: BTreeMap::from([("ab".into(), b"c".to_vec())]),
            missing: vec![],
        };
        let y = Assembled {
            data: BTreeMap::from([("a".into(), b"bc".to_vec())]),
            missing: vec![],
        };
        assert_ne!(x.content_hash(), y.content_hash());
    }

    #[test]
    fn targets_are_labelled_namespaces_in_either_mode_plus_the_policy_namespace() {
        let t = target_namespaces(
            [
                ("dev", Some("enabled")),
                ("ml", Some("opt-in")),
                ("off", Some("disabled")),
                ("x", None),
            ],
            "tollgate-system",
        );
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            ["dev", "ml", "tollgate-system"]
        );
    }

    #[test]
    fn secret_key_flags_parse() {
        assert_eq!(
            parse_secret_key("redis/url"),
            Some(("redis".into(), "url".into()))
        );
        assert_eq!(parse_secret_key("redis"), None);
        assert_eq!(parse_secret_key("/url"), None);
        assert_eq!(parse_secret_key("a_b/url"), None);
    }
}
