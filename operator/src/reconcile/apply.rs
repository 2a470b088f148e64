//! The API calls the reconciler makes. Each is one request, so the tower-test suite can
//! assert its method, URI, body and field manager.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::compile::{Kind, PolicyConfigMap, StatusUpdate};
use crate::crd::{GROUP, VERSION, VirtualKey};
use crate::secrets::{self, MANAGED_BY_LABEL, MANAGER};

/// Label on policy ConfigMaps naming the policy they belong to.
pub const POLICY_LABEL: &str = "tollgate.dev/policy";

/// Annotation the operator's cache puts on an observed ConfigMap: the SHA-256 of its data,
/// which is dropped, so the cache holds no policy content (policy size times namespaces).
pub const OBSERVED_HASH_ANNOTATION: &str = "tollgate.dev/observed-sha256";

/// The labels of every policy ConfigMap (the operator's own; nothing copied from resources).
/// The policy name is a label value only when it is a valid one (else its hash).
pub fn config_map_labels(policy_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
        (POLICY_LABEL.to_owned(), crate::names::label_value(policy_name)),
    ])
}

/// The ConfigMap object applied for one shard.
pub fn desired_config_map(cm: &PolicyConfigMap, namespace: &str, policy_name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(cm.name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(config_map_labels(policy_name)),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(cm.file.clone(), cm.content.clone())])),
        ..Default::default()
    }
}

/// SHA-256 (hex) of a ConfigMap's data and binary data, length-prefixed so no two contents
/// share a hash.
pub fn config_map_content_hash(cm: &ConfigMap) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    for (k, v) in cm.data.iter().flatten() {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        field(b"binary");
        field(k.as_bytes());
        field(&v.0);
    }
    hex::encode(h.finalize())
}

/// Replaces an observed ConfigMap's content by its hash before it is cached.
pub fn strip_config_map(cm: &mut ConfigMap) {
    let hash = config_map_content_hash(cm);
    cm.data = None;
    cm.binary_data = None;
    cm.metadata.managed_fields = None;
    cm.metadata.annotations = Some(BTreeMap::from([(OBSERVED_HASH_ANNOTATION.to_owned(), hash)]));
}

/// Whether the observed (stripped) ConfigMap already holds exactly what would be applied:
/// the operator's labels and the same content. An edit by anyone else shows as a different
/// hash and is corrected.
pub fn config_map_up_to_date(current: &ConfigMap, desired: &ConfigMap) -> bool {
    let labels_ok = desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| current.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    let observed = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OBSERVED_HASH_ANNOTATION));
    labels_ok && observed == Some(&config_map_content_hash(desired))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Server-side applies a namespaced core/v1 object the operator owns, with its field manager.
async fn apply_owned<K>(client: &Client, kind: &str, desired: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let ns = desired.meta().namespace.as_deref().unwrap_or("default");
    let name = desired.meta().name.as_deref().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut body = serde_json::to_value(desired).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = json!("v1");
    body["kind"] = json!(kind);
    api.patch(name, &apply_params(), &Patch::Apply(body)).await?;
    Ok(())
}

/// Deletes a namespaced object the operator owns; one already gone is fine.
async fn delete_owned<K>(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Server-side applies a policy ConfigMap with the operator's field manager.
pub async fn apply_config_map(client: &Client, desired: &ConfigMap) -> Result<(), kube::Error> {
    apply_owned(client, "ConfigMap", desired).await
}

/// Deletes a policy ConfigMap that is no longer part of the policy (a shard after the key
/// set shrank, or a copy in a namespace no longer labelled). Already gone is fine.
pub async fn delete_config_map(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    delete_owned::<ConfigMap>(client, namespace, name).await
}

/// The labels and data of a Secret, or `None` when it does not exist.
pub async fn read_secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<SecretContent>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?.map(|s| {
        let data = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        (s.metadata.labels.unwrap_or_default(), data)
    }))
}

/// A Secret's labels and its data by key.
pub type SecretContent = (BTreeMap<String, String>, BTreeMap<String, Vec<u8>>);

/// The credentials Secret for one namespace: the assembled data, labelled as the operator's
/// and annotated with its content hash.
pub fn desired_credentials(
    name: &str,
    namespace: &str,
    policy_name: &str,
    data: &BTreeMap<String, Vec<u8>>,
    hash: &str,
) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(config_map_labels(policy_name)),
            annotations: Some(BTreeMap::from([(
                crate::credentials::CONTENT_HASH_ANNOTATION.to_owned(),
                hash.to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Server-side applies a Secret the operator owns (the credentials Secret).
pub async fn apply_secret(client: &Client, desired: &Secret) -> Result<(), kube::Error> {
    apply_owned(client, "Secret", desired).await
}

/// Deletes a Secret the operator owns; already gone is fine.
pub async fn delete_secret(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    delete_owned::<Secret>(client, namespace, name).await
}

/// The API resource of a Tollgate kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, kind.as_str()),
        kind.plural(),
    )
}

/// Server-side applies a resource's status (the status subresource; the spec is never
/// touched). A resource deleted meanwhile is fine.
pub async fn apply_status(client: &Client, update: &StatusUpdate) -> Result<(), kube::Error> {
    let ar = api_resource(update.kind);
    let api: Api<DynamicObject> = match &update.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let mut status = update.status.clone();
    if update.kind == Kind::Budget
        && let Some(s) = status.as_object_mut()
    {
        // Notification records are the notifier's (claimed with optimistic concurrency): a
        // status applied from a cached copy must never own, and so overwrite, them.
        s.remove(crate::notify::NOTIFICATIONS_FIELD);
    }
    let body = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "status": status,
    });
    match api
        .patch_status(&update.name, &apply_params(), &Patch::Apply(body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// What became of a key Secret creation.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretCreated {
    /// Created; the key's SHA-256.
    Created(String),
    /// A Secret of that name already exists (it is never overwritten).
    AlreadyExists,
}

/// Creates the Secret holding a new generated key for `vk`. Uses create, not apply, so an
/// existing key is never replaced.
pub async fn create_key_secret(client: &Client, vk: &VirtualKey) -> Result<SecretCreated, crate::Error> {
    let ns = vk.meta().namespace.as_deref().unwrap_or("default");
    let key = secrets::generate_key()?;
    let secret = secrets::generated_secret(vk, &key);
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api
        .create(
            &PostParams {
                field_manager: Some(MANAGER.to_owned()),
                ..Default::default()
            },
            &secret,
        )
        .await
    {
        Ok(_) => Ok(SecretCreated::Created(secrets::key_sha256(&key))),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(SecretCreated::AlreadyExists),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(content: &str) -> PolicyConfigMap {
        PolicyConfigMap {
            name: "tollgate-policy".into(),
            file: "policy.json".into(),
            content: content.into(),
        }
    }

    /// The cache keeps no policy content, yet an edit by anyone else is still seen as drift.
    #[test]
    fn stripped_config_maps_still_show_drift() {
        let desired = desired_config_map(&shard("{\"version\":1}"), "dev", "tollgate-policy");
        let mut observed = desired.clone();
        strip_config_map(&mut observed);
        assert!(observed.data.is_none());
        assert!(config_map_up_to_date(&observed, &desired));
        let mut edited = desired.clone();
        if let Some(d) = edited.data.as_mut() {
            d.insert("policy.json".into(), "{\"version\":1,\"keys\":[\"mine\"]}".into());
        }
        strip_config_map(&mut edited);
        assert!(
            !config_map_up_to_date(&edited, &desired),
            "a tenant's edit must be corrected"
        );
        let mut extra = desired.clone();
        extra.binary_data = Some(BTreeMap::from([("x".into(), k8s_openapi::ByteString(vec![1]))]));
        strip_config_map(&mut extra);
        assert!(!config_map_up_to_date(&extra, &desired));
    }

    #[test]
    fn policy_labels_are_valid_for_any_policy_name() {
        for name in ["tollgate-policy", &"p".repeat(64), "odd name!"] {
            for (k, v) in config_map_labels(name) {
                assert!(
                    crate::names::is_qualified_name(&k) && crate::names::is_label_value(&v),
                    "{k}={v}"
                );
            }
        }
    }
}
