//! Types shared by several resources: model access lists, rate limits, credential references
//! and the status conditions every resource reports.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// Allow and deny globs for model names (`*` any run, `?` one character). An empty `allow`
/// allows every routed model; `deny` always wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelAccess {
    /// Model names or globs this subject may use, e.g. `claude-sonnet-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("patterns must not be empty"))]
    pub allow: Vec<String>,
    /// Model names or globs this subject may never use, even when `allow` matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("patterns must not be empty"))]
    pub deny: Vec<String>,
}

/// Allow and deny globs for tool names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatternList {
    /// Tool name globs allowed (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    pub allow: Vec<String>,
    /// Tool name globs denied; deny wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    pub deny: Vec<String>,
}

/// Rate limits; an absent field means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub concurrent: Option<u64>,
}

/// A key in a Secret in the same namespace as the referring resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(max = bounds::NAME))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default = "default_secret_key")]
    #[schemars(length(max = bounds::SECRET_KEY))]
    pub key: String,
}

/// The data key a virtual key Secret holds its key under, unless `secretRef.key` says otherwise.
pub const DEFAULT_SECRET_KEY: &str = "key";

fn default_secret_key() -> String {
    DEFAULT_SECRET_KEY.to_owned()
}

/// Where the proxy reads a credential from. A Secret key (in the operator's namespace) is
/// copied into the credentials Secret the proxies mount, as the file
/// `<credentialsDir>/<secret name>_<key>`; values never reach a ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.env)").message("set exactly one of secretKeyRef or env"))]
pub struct CredentialRef {
    /// A Secret key, mounted into the proxy as a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// An environment variable of the proxy container holding the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::ENV_NAME))]
    pub env: Option<String>,
}

/// Audit content capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CaptureMode {
    /// Identity, model, tokens and cost only.
    #[default]
    None,
    /// Adds request metadata (tool names, sizes).
    Metadata,
    /// Adds prompts and completions, within size limits.
    Full,
}

/// A status condition, shaped like `metav1.Condition` so kstatus (Flux) and Argo CD read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type; Tollgate reports `Ready`.
    #[serde(rename = "type")]
    #[schemars(length(max = bounds::CONDITION_TYPE))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// A CamelCase machine-readable reason, e.g. `TeamNotFound`.
    #[schemars(length(max = bounds::CONDITION_REASON))]
    pub reason: String,
    /// What happened, for a human.
    #[schemars(length(max = bounds::CONDITION_MESSAGE))]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[schemars(length(max = bounds::TIMESTAMP))]
    pub last_transition_time: String,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The status every Tollgate resource reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the resource is part of the compiled policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::CONDITIONS), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
